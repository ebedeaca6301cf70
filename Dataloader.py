"""Series files -> time splits -> windows -> DataLoaders of jax arrays."""

import csv
import dataclasses
import datetime
import functools
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
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
FILLS = ("none", "linear", "previous")  # what fills a missing time step
LISTED_ROWS = 3  # offending rows an error message names
US_PER_DAY = 86_400 * 10**6

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class Series:
    """One evenly sampled series: t and y are float64 [time].

    A series read with a date column counts its steps in t (0, 1, 2, ...)
    and keeps the dates in stamps, datetime64[us] [time].
    """

    t: np.ndarray
    y: np.ndarray
    source: str  # file path or name, for messages
    stamps: np.ndarray | None = None

    def __post_init__(self):
        t = np.asarray(self.t, dtype=np.float64)
        y = np.asarray(self.y, dtype=np.float64)
        if t.ndim != 1 or t.shape != y.shape:
            raise ValueError(f"t {t.shape} and y {y.shape} must be equal 1-D")
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "y", y)
        if self.stamps is not None:
            stamps = np.asarray(self.stamps, dtype="datetime64[us]")
            if stamps.shape != t.shape:
                raise ValueError(
                    f"stamps {stamps.shape} and t {t.shape} differ"
                )
            object.__setattr__(self, "stamps", stamps)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: slice) -> "Series":
        stamps = None if self.stamps is None else self.stamps[index]
        return Series(self.t[index], self.y[index], self.source, stamps)


@dataclasses.dataclass(frozen=True)
class Splits:
    """The three parts of one series, in time order."""

    train: Series
    val: Series
    test: Series


def load_series(
    path: PathLike,
    *,
    time_column: str = "",
    value_column: str = "",
    fill: str = "none",
) -> Series:
    """Reads a CSV, a one-column file, or a file of windows (TSV).

    A CSV's time column holds numbers or ISO dates. The columns are the
    ones named, else t and y, else the first column of numbers or dates and
    the next numeric one. Missing time steps are an error unless fill is
    "linear" or "previous"; repeated or off-grid times always are.
    """
    if fill not in FILLS:
        raise ValueError(f"fill {fill!r} is not one of {FILLS}")
    lines = _read_lines(path)
    first = lines[0][1]
    if "\t" not in first and "," in first:
        return _parse_csv(path, lines, time_column, value_column, fill)
    if time_column or value_column:
        raise InputError(
            f"{path}: columns can be chosen only in a CSV file with a header"
        )
    if "\t" in first:
        return _parse_windowed(path, lines, in_len=None)
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


def _split_row(line: str) -> list[str]:
    # The csv module, so that quoted names ("YEAR") and cells read right.
    return [cell.strip() for cell in next(csv.reader([line]))]


def _parse_csv(
    path: PathLike,
    lines: list[Line],
    time_column: str = "",
    value_column: str = "",
    fill: str = "none",
) -> Series:
    header_number, header_line = lines[0]
    header = _split_row(header_line)
    if all(_is_number(name) for name in header):
        raise InputError(
            f"{path}: line {header_number} holds numbers; the first line "
            "must name the columns"
        )
    rows = lines[1:]
    if not rows:
        raise InputError(f"{path}: no values after the header")

    cells = []
    for number, line in rows:
        row = _split_row(line)
        if len(row) != len(header):
            raise InputError(
                f"{path}: line {number} has {len(row)} columns, "
                f"the header has {len(header)}"
            )
        cells.append(row)
    numbers = [number for number, _ in rows]
    t_col, y_col = _choose_columns(
        path, header, cells[0], time_column, value_column
    )
    y = np.array(
        [
            _parse_value(path, number, row[y_col])
            for number, row in zip(numbers, cells, strict=True)
        ]
    )
    times = _Times(path, header[t_col], numbers, [row[t_col] for row in cells])
    return times.regularize(y, fill)


def _choose_columns(
    path: PathLike,
    header: list[str],
    first_row: list[str],
    time_column: str,
    value_column: str,
) -> tuple[int, int]:
    """Returns the indices of the time and value columns; see load_series."""
    found = ", ".join(header)
    for name in (time_column, value_column):
        if name and name not in header:
            raise InputError(
                f"{path}: no column {name!r} (the header has {found})"
            )
    if time_column and time_column == value_column:
        raise InputError(
            f"{path}: {time_column!r} cannot be both the time and the value"
        )

    y_col = header.index(value_column) if value_column else None
    if time_column:
        t_col = header.index(time_column)
    elif "t" in header and header.index("t") != y_col:
        t_col = header.index("t")
    else:
        t_col = next(
            (
                i
                for i, cell in enumerate(first_row)
                if i != y_col and (_is_number(cell) or _to_stamp(cell))
            ),
            None,
        )
        if t_col is None:
            raise InputError(
                f"{path}: no 't' column, and no column of numbers or ISO "
                f"dates to use as time (the header has {found})"
            )

    if y_col is None and "y" in header and header.index("y") != t_col:
        y_col = header.index("y")
    if y_col is None:
        # The next numeric column after the time column, else one before.
        order = list(range(t_col + 1, len(header))) + list(range(t_col))
        y_col = next((i for i in order if _is_number(first_row[i])), None)
        if y_col is None:
            raise InputError(
                f"{path}: no 'y' column, and no numeric column besides "
                f"{header[t_col]!r} to use as values (the header has {found})"
            )
    return t_col, y_col


_YEAR_MONTH = re.compile(r"\d{4}-\d{2}")


def _to_stamp(cell: str) -> np.datetime64 | None:
    """An ISO date or date-time as datetime64[us] (UTC if it has a zone)."""
    if _YEAR_MONTH.fullmatch(cell):
        cell += "-01"
    try:
        stamp = datetime.datetime.fromisoformat(cell)
    except ValueError:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(datetime.UTC).replace(tzinfo=None)
    return np.datetime64(stamp, "us")


def _listing(items: list[str]) -> str:
    """The first few items, and how many more there are."""
    shown = "; ".join(items[:LISTED_ROWS])
    if len(items) > LISTED_ROWS:
        shown += f"; and {len(items) - LISTED_ROWS} more"
    return shown


@dataclasses.dataclass(frozen=True)
class _Grid:
    """Where rows fall on a grid of even steps from the first row."""

    step: float  # in the units of the axis it was fit to
    index: np.ndarray  # int [rows]: each row's grid point
    off: np.ndarray  # int [k]: rows that lie between grid points


def _fit_grid(axis: np.ndarray) -> _Grid:
    """Fits a grid to increasing times, [rows]; needs two rows or more.

    The step is the most common difference, the smallest one of those
    equally common.
    """
    steps = np.diff(axis)
    # Differences that agree to about 6 digits count as one.
    keys = np.round(steps / (np.median(steps) * 1e-6))
    values, counts = np.unique(keys, return_counts=True)
    step = float(np.median(steps[keys == values[np.argmax(counts)]]))
    # The span to the last row near the grid pins the step down better
    # than any one difference.
    position = (axis - axis[0]) / step
    near = np.flatnonzero(np.abs(position - np.round(position)) < 0.01)
    last = near[-1]
    if last > 0:
        step = float((axis[last] - axis[0]) / np.round(position[last]))
    position = (axis - axis[0]) / step
    index = np.round(position).astype(np.int64)
    off = np.flatnonzero(np.abs(position - index) > TIME_TOLERANCE)
    return _Grid(step, index, off)


def _duration_text(microseconds: float) -> str:
    units = (("day", US_PER_DAY), ("hour", 3_600 * 10**6), ("minute", 6e7))
    for unit, size in units:
        count = microseconds / size
        if count >= 1 and count == round(count):
            return f"{count:g} {unit}" + ("s" if count != 1 else "")
    return f"{microseconds / 1e6:g} s"


class _Months:
    """Calendar months from a first stamp, each on that stamp's day and time.

    A series of month ends (Jan 31, Feb 29, ...) keeps its distance to the
    end of the month instead.
    """

    def __init__(self, stamps: np.ndarray):
        months = stamps.astype("datetime64[M]")
        starts = months.astype(stamps.dtype)
        ends = (months + 1).astype(stamps.dtype)
        from_start, to_end = stamps - starts, ends - stamps
        self.first = months[0]
        self.from_end = bool(
            np.all(to_end == to_end[0])
            and not np.all(from_start == from_start[0])
        )
        self.offset = to_end[0] if self.from_end else from_start[0]
        count = (months - self.first).astype(np.int64)
        expected = self.stamps(count)
        self.axis = count + (stamps - expected) / (ends - starts)

    def stamps(self, count: np.ndarray) -> np.ndarray:
        """The stamps `count` [k] months after the first, datetime64[us]."""
        months = self.first + count
        start = months.astype("datetime64[us]")
        end = (months + 1).astype("datetime64[us]")
        if self.from_end:
            return end - self.offset
        # Past a short month's end (the 31st in April): its last day.
        day = np.timedelta64(1, "D")
        return start + np.minimum(
            self.offset, end - start - day + self.offset % day
        )


class _Times:
    """A file's time column: numbers, or ISO dates read as stamps."""

    def __init__(
        self, path: PathLike, name: str, numbers: list[int], cells: list[str]
    ):
        self.path, self.name, self.numbers = path, name, numbers
        self.labels = [f"{name} = {cell}" for cell in cells]
        self.stamps = None
        if _is_number(cells[0]):
            self.t = np.array(
                [
                    _parse_value(path, number, cell)
                    for number, cell in zip(numbers, cells, strict=True)
                ]
            )
            self.axis = self.t
            return
        stamps = []
        for number, cell in zip(numbers, cells, strict=True):
            stamp = _to_stamp(cell)
            if stamp is None:
                raise InputError(
                    f"{path}: line {number}: {cell!r} is not an ISO date "
                    f"like the {name} above it"
                )
            stamps.append(stamp)
        self.stamps = np.array(stamps, dtype="datetime64[us]")
        self.axis = (self.stamps - self.stamps[0]) / np.timedelta64(1, "us")

    def regularize(self, y: np.ndarray, fill: str) -> Series:
        """The series on an even grid, gaps filled by `fill` if allowed."""
        self._check_order()
        if len(y) == 1:
            t = self.t if self.stamps is None else np.zeros(1)
            return Series(t, y, str(self.path), self.stamps)

        grid, step_text, grid_stamps = self._fit()
        if grid.off.size:
            raise InputError(
                f"{self.path}: {self.name} is not evenly spaced (most "
                f"common step {step_text}); off that grid: "
                + _listing([self._row(i) for i in grid.off])
            )
        gaps = np.flatnonzero(np.diff(grid.index) > 1)
        if gaps.size and fill == "none":
            missing = np.diff(grid.index)[gaps] - 1
            raise InputError(
                f"{self.path}: {self.name} has gaps in steps of {step_text}: "
                + _listing(
                    [
                        f"{m} missing after {self._row(i)}"
                        for i, m in zip(gaps, missing, strict=True)
                    ]
                )
                + " (--fill linear or --fill previous fills them)"
            )

        points = np.arange(grid.index[-1] + 1)
        if fill != "none":
            log.info(
                "%s: %s of %s points filled (%s)",
                self.path,
                len(points) - len(y),
                len(points),
                fill,
            )
        if fill == "linear":
            y = np.interp(points, grid.index, y)
        elif fill == "previous":
            y = y[np.searchsorted(grid.index, points, side="right") - 1]

        if self.stamps is None:
            t = self.t[0] + grid.step * points
            t[grid.index] = self.t  # the rows' times as written
            return Series(t, y, str(self.path))
        stamps = grid_stamps(points)
        stamps[grid.index] = self.stamps
        return Series(points.astype(np.float64), y, str(self.path), stamps)

    def _row(self, i: int) -> str:
        return f"line {self.numbers[i]} ({self.labels[i]})"

    def _check_order(self) -> None:
        steps = np.diff(self.axis)
        repeats = np.flatnonzero(steps == 0) + 1
        if repeats.size:
            raise InputError(
                f"{self.path}: {self.name} repeats: "
                + _listing(
                    [
                        f"{self._row(i)} as on line {self.numbers[i - 1]}"
                        for i in repeats
                    ]
                )
            )
        back = np.flatnonzero(steps < 0) + 1
        if back.size:
            raise InputError(
                f"{self.path}: {self.name} does not increase: "
                + _listing(
                    [f"{self._row(i)} after {self._row(i - 1)}" for i in back]
                )
            )

    def _fit(self) -> tuple[_Grid, str, Callable[[np.ndarray], np.ndarray]]:
        """The grid, its step in words, and the stamps of grid points."""
        grid = _fit_grid(self.axis)
        if self.stamps is None:
            return grid, f"{grid.step:g}", lambda points: None

        def exact(points: np.ndarray) -> np.ndarray:
            offsets = np.round(points * grid.step).astype("timedelta64[us]")
            return self.stamps[0] + offsets

        result = grid, _duration_text(grid.step), exact
        # Months and years vary in days; they are even on the calendar.
        if grid.off.size and np.median(np.diff(self.axis)) >= 27 * US_PER_DAY:
            months = _Months(self.stamps)
            if np.any(np.diff(months.axis) <= 0):
                return result
            by_month = _fit_grid(months.axis)
            if by_month.off.size < grid.off.size:
                step = round(by_month.step)
                text = f"{step} month" + ("s" if step != 1 else "")
                return by_month, text, lambda p: months.stamps(p * step)
        return result


def _parse_column(path: PathLike, lines: list[Line]) -> Series:
    first = lines[0][1]
    # A first line that is one non-numeric word names the column.
    if not _is_number(first) and len(first.split()) == 1:
        lines = lines[1:]
        if not lines:
            raise InputError(f"{path}: no values after the header")
    y = np.array([_parse_value(path, n, line) for n, line in lines])
    return Series(np.arange(len(y), dtype=np.float64), y, str(path))


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
    *,
    time_column: str = "",
    value_column: str = "",
    fill: str = "none",
) -> Splits:
    """Loads a toy series by name, or a series file by path, and splits it.

    A toy series comes as {name}_train.csv and {name}_test.csv; its test
    split is exactly the test file. A series file is read as load_series
    reads it, with the columns and fill given, and loses its last
    test_fraction to the test split.
    """
    if dataset in TOY_DATASETS:
        series, test_start = _load_toy(dataset, Path(data_dir))
    else:
        series = load_series(
            dataset,
            time_column=time_column,
            value_column=value_column,
            fill=fill,
        )
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


def to_jax(
    batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding | None
) -> Batch:
    """Places a numpy batch on the devices, split as `sharding` says."""
    if sharding is None or jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    # Across hosts every process holds the whole batch (the same seed reads
    # the same files in the same order) and gives its devices their rows.
    return {
        name: jax.make_array_from_callback(
            value.shape, sharding, lambda index, value=value: value[index]
        )
        for name, value in batch.items()
    }


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
        sharding: jax.sharding.Sharding | None = None,
    ):
        self.seed = seed
        self.sharding = sharding
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

    def numpy_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """The batches as the workers make them: numpy arrays."""
        return super().__iter__()

    def __iter__(self) -> Iterator[Batch]:
        # Converted here, in the main process: workers never touch JAX.
        # With a sharding, each device gets its slice of the batch axis.
        for batch in self.numpy_batches():
            yield to_jax(batch, self.sharding)


def make_loader(
    dataset: WindowDataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    sharding: jax.sharding.Sharding | None = None,
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
        dataset,
        batch_size,
        train=train,
        seed=seed,
        num_workers=num_workers,
        sharding=sharding,
    )
