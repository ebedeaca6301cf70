"""Series files -> time splits -> windows -> DataLoaders of jax arrays."""

import dataclasses
import functools
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
import torch
import torch.utils.data

from config import TOY_DATASETS, InputError

Array = jax.Array
PathLike = str | os.PathLike
Batch = dict[str, Array]  # context [B, in_len], target [B, out_len], mask [B]
Line = tuple[int, str]  # (1-based line number, text)

DATA_DIR = Path(__file__).parent / "data"
TIME_TOLERANCE = 1e-6  # allowed spacing error, relative to the step

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class Series:
    """One evenly sampled series: t and y are float64 [time]."""

    t: np.ndarray
    y: np.ndarray
    source: str  # file path or name, for messages

    def __post_init__(self):
        t = np.asarray(self.t, dtype=np.float64)
        y = np.asarray(self.y, dtype=np.float64)
        if t.ndim != 1 or t.shape != y.shape:
            raise ValueError(f"t {t.shape} and y {y.shape} must be equal 1-D")
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "y", y)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: slice) -> "Series":
        return Series(self.t[index], self.y[index], self.source)


@dataclasses.dataclass(frozen=True)
class Splits:
    """The three parts of one series, in time order."""

    train: Series
    val: Series
    test: Series


def load_series(path: PathLike) -> Series:
    """Reads a t,y CSV, a one-column file, or a file of windows (TSV)."""
    lines = _read_lines(path)
    first = lines[0][1]
    if "\t" in first:
        return _parse_windowed(path, lines, in_len=None)
    if "," in first:
        return _parse_csv(path, lines)
    return _parse_column(path, lines)


def load_windowed(path: PathLike, in_len: int | None = None) -> Series:
    """Rebuilds the series that a file of windows was cut from.

    Each tab-separated row is an input window followed by its target window;
    the halves are equal unless in_len says where the input ends. t is the
    sample index.
    """
    return _parse_windowed(path, _read_lines(path), in_len)


def _read_lines(path: PathLike) -> list[Line]:
    """Returns the non-blank lines of a text file, with their numbers."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    try:
        text = p.read_text()
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not lines:
        raise InputError(f"{path}: file is empty")
    return lines


def _parse_value(path: PathLike, number: int, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise InputError(
            f"{path}: line {number}: {cell.strip()!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise InputError(
            f"{path}: line {number}: {cell.strip()!r} is not a finite number"
        )
    return value


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_csv(path: PathLike, lines: list[Line]) -> Series:
    header = [name.strip() for name in lines[0][1].split(",")]
    if "t" not in header or "y" not in header:
        raise InputError(
            f"{path}: the header has no 't' and 'y' columns "
            f"(found {','.join(header)})"
        )
    rows = lines[1:]
    if not rows:
        raise InputError(f"{path}: no values after the header")

    t_col, y_col = header.index("t"), header.index("y")
    t, y = [], []
    for number, line in rows:
        cells = line.split(",")
        if len(cells) != len(header):
            raise InputError(
                f"{path}: line {number} has {len(cells)} columns, "
                f"the header has {len(header)}"
            )
        t.append(_parse_value(path, number, cells[t_col]))
        y.append(_parse_value(path, number, cells[y_col]))

    t = np.array(t)
    _check_times(path, t, [number for number, _ in rows])
    return Series(t, np.array(y), str(path))


def _parse_column(path: PathLike, lines: list[Line]) -> Series:
    first = lines[0][1]
    # A first line that is one non-numeric word names the column.
    if not _is_number(first) and len(first.split()) == 1:
        lines = lines[1:]
        if not lines:
            raise InputError(f"{path}: no values after the header")
    y = np.array([_parse_value(path, n, line) for n, line in lines])
    return Series(np.arange(len(y), dtype=np.float64), y, str(path))


def _check_times(path: PathLike, t: np.ndarray, numbers: list[int]) -> None:
    """Checks that t increases in even steps; numbers are the file lines."""
    steps = np.diff(t)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        i = bad[0] + 1
        raise InputError(
            f"{path}: line {numbers[i]}: t = {float(t[i])!r} does not increase "
            f"(previous t = {float(t[i - 1])!r})"
        )
    if not steps.size:
        return
    step = steps[0]
    bad = np.flatnonzero(np.abs(steps - step) > TIME_TOLERANCE * step)
    if bad.size:
        i = bad[0] + 1
        raise InputError(
            f"{path}: line {numbers[i]}: t is not evenly spaced "
            f"(step {float(steps[i - 1])!r}, expected {float(step)!r})"
        )


def _parse_windowed(
    path: PathLike, lines: list[Line], in_len: int | None
) -> Series:
    first_number, first = lines[0]
    width = len(first.split("\t"))
    values = []
    for number, line in lines:
        cells = line.split("\t")
        if len(cells) != width:
            raise InputError(
                f"{path}: line {number} has {len(cells)} values, "
                f"line {first_number} has {width}"
            )
        values.append([_parse_value(path, number, cell) for cell in cells])
    rows = np.array(values)  # [n_rows, in_len + out_len]

    if in_len is None and width % 2:
        raise InputError(
            f"{path}: rows have an odd number of values ({width}), "
            "so in_len must say where the input window ends"
        )
    if in_len is not None and not 0 < in_len < width:
        raise InputError(
            f"{path}: in_len {in_len} does not fit rows of {width} values"
        )

    stride = _find_stride(rows)
    if stride is None:
        raise InputError(
            f"{path}: rows do not overlap as windows of one series"
        )
    y = np.concatenate([rows[0], rows[1:, width - stride :].ravel()])
    return Series(np.arange(len(y), dtype=np.float64), y, str(path))


def _find_stride(rows: np.ndarray) -> int | None:
    """Returns the smallest shift s with row[i + 1][:-s] == row[i][s:]."""
    n_rows, width = rows.shape
    if n_rows == 1:
        return width
    # Shifts up to width - 1 only: at width every pair of rows would "chain",
    # so nothing would show that the rows come from one series.
    for stride in range(1, width):
        if np.array_equal(rows[1:, :-stride], rows[:-1, stride:]):
            return stride
    return None


def split_series(
    series: Series, test_start: int, val_fraction: float
) -> Splits:
    """Cuts test = series[test_start:]; val is the end of the rest."""
    if not 0 <= test_start <= len(series):
        raise ValueError(f"test_start {test_start} outside 0..{len(series)}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction {val_fraction} outside [0, 1)")
    val_start = test_start - round(val_fraction * test_start)
    return Splits(
        train=series[:val_start],
        val=series[val_start:test_start],
        test=series[test_start:],
    )


def load_dataset(
    dataset: str,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    data_dir: PathLike = DATA_DIR,
) -> Splits:
    """Loads a toy series by name, or a series file by path, and splits it.

    A toy series comes as {name}_train.csv and {name}_test.csv; its test
    split is exactly the test file. A series file loses its last
    test_fraction to the test split.
    """
    if dataset in TOY_DATASETS:
        series, test_start = _load_toy(dataset, Path(data_dir))
    else:
        series = load_series(dataset)
        test_start = len(series) - round(len(series) * test_fraction)
    return split_series(series, test_start, val_fraction)


def _load_toy(name: str, data_dir: Path) -> tuple[Series, int]:
    train_path = data_dir / f"{name}_train.csv"
    test_path = data_dir / f"{name}_test.csv"
    train, test = load_series(train_path), load_series(test_path)

    if len(train) > 1:
        step = train.t[1] - train.t[0]
        expected = train.t[-1] + step * np.arange(1, min(len(test), 2) + 1)
        gaps = np.abs(test.t[: len(expected)] - expected)
        if np.any(gaps > TIME_TOLERANCE * step):
            raise InputError(
                f"{test_path}: t does not continue {train_path.name} "
                f"in steps of {float(step)!r}"
            )

    series = Series(
        np.concatenate([train.t, test.t]),
        np.concatenate([train.y, test.y]),
        str(data_dir / f"{name}_{{train,test}}.csv"),
    )
    return series, len(train)


class WindowDataset(torch.utils.data.Dataset):
    """(context, target) windows that lie entirely inside one series."""

    def __init__(
        self, series: Series, in_len: int, out_len: int, stride: int = 1
    ):
        if min(in_len, out_len, stride) < 1:
            raise ValueError("in_len, out_len and stride must be at least 1")
        self.series = series
        self.in_len = in_len
        self.out_len = out_len
        self.stride = stride
        # Read-only, so the views handed out cannot change the series.
        self.values = series.y.astype(np.float32)
        self.values.setflags(write=False)
        last_start = len(series) - in_len - out_len
        self.starts = np.arange(0, last_start + 1, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Returns (context [in_len], target [out_len]), float32."""
        start = self.starts[i]
        split = start + self.in_len
        return (
            self.values[start:split],
            self.values[split : split + self.out_len],
        )

    def __getitems__(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Returns k windows: contexts [k, in_len] and targets [k, out_len].

        The DataLoader calls this instead of k calls of __getitem__.
        """
        rows = self.starts[np.asarray(indices)][:, None]
        contexts = self.values[rows + np.arange(self.in_len)]
        targets = self.values[rows + self.in_len + np.arange(self.out_len)]
        return contexts, targets

    def target_times(self, i: int) -> np.ndarray:
        """Returns the t values of window i's target, [out_len]."""
        split = self.starts[i] + self.in_len
        return self.series.t[split : split + self.out_len]

    def contexts(self) -> np.ndarray:
        """Returns every context at once, float32 [n_windows, in_len]."""
        return self.values[self.starts[:, None] + np.arange(self.in_len)]

    def targets(self) -> np.ndarray:
        """Returns every target at once, float32 [n_windows, out_len]."""
        offsets = self.in_len + np.arange(self.out_len)
        return self.values[self.starts[:, None] + offsets]


def check_windows(dataset: WindowDataset, split_name: str, source: str) -> None:
    """Raises InputError when a split is too short for a single window."""
    if len(dataset) == 0:
        raise InputError(
            f"{source}: the {split_name} split has {len(dataset.series)} "
            "samples, fewer than one window "
            f"(in_len + out_len = {dataset.in_len + dataset.out_len})"
        )


def collate_windows(
    windows: tuple[np.ndarray, np.ndarray], batch_size: int
) -> dict[str, np.ndarray]:
    """Pads a batch from `WindowDataset.__getitems__` to batch_size rows.

    Padded rows repeat the last real row, which keeps them in range for
    anything computed before the mask; mask is 0 on them and 1 elsewhere.
    """
    context, target = windows
    real = len(context)
    mask = (np.arange(batch_size) < real).astype(np.float32)
    if real < batch_size:
        pad = np.full(batch_size - real, real - 1)
        context = np.concatenate([context, context[pad]])
        target = np.concatenate([target, target[pad]])
    return {"context": context, "target": target, "mask": mask}


class JaxLoader(torch.utils.data.DataLoader):
    """A DataLoader whose batches are dicts of float32 jax arrays.

    Every batch has batch_size rows, so jitted code compiles once. Training
    batches are shuffled and the last partial one is dropped; evaluation
    batches keep order and the last one is padded (see collate_windows).
    """

    def __init__(
        self,
        dataset: WindowDataset,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        num_workers: int = 0,
    ):
        self.seed = seed
        self.shuffle_rng = None
        sampler = None
        if train:
            # The sampler gets its own generator: the one DataLoader takes
            # is also drawn from for worker seeds, which would make the
            # order depend on num_workers.
            self.shuffle_rng = torch.Generator().manual_seed(seed)
            sampler = torch.utils.data.RandomSampler(
                dataset, generator=self.shuffle_rng
            )
        workers = {}
        if num_workers > 0:
            # Forking a process that runs JAX's threads can deadlock.
            workers = {
                "multiprocessing_context": "spawn",
                "persistent_workers": True,
            }
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=train,
            collate_fn=functools.partial(
                collate_windows, batch_size=batch_size
            ),
            num_workers=num_workers,
            **workers,
        )

    def set_epoch(self, epoch: int) -> None:
        """Makes the next pass's order depend only on (seed, epoch)."""
        if self.shuffle_rng is not None:
            self.shuffle_rng.manual_seed(self.seed * 1_000_003 + epoch)

    def __iter__(self) -> Iterator[Batch]:
        # Converted here, in the main process: workers never touch JAX.
        for batch in super().__iter__():
            yield jax.device_put(batch)


def make_loader(
    dataset: WindowDataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
) -> JaxLoader:
    """Returns a loader of fixed-shape batches; see JaxLoader.

    A training set smaller than batch_size becomes a single batch of all
    its windows rather than no batch at all.
    """
    if train and len(dataset) == 0:
        raise ValueError("cannot train on an empty WindowDataset")
    if train and len(dataset) < batch_size:
        log.warning(
            "only %s training windows, fewer than batch_size %s; "
            "using batch_size %s",
            len(dataset),
            batch_size,
            len(dataset),
        )
        batch_size = len(dataset)
    return JaxLoader(
        dataset, batch_size, train=train, seed=seed, num_workers=num_workers
    )
