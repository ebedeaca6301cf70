"""Specifications of Dataloader.py and data/make_data.py."""

import logging
import os
import pathlib
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import Dataloader
from config import InputError
from data import make_data
from Dataloader import (
    DATA_DIR,
    Series,
    WindowDataset,
    check_windows,
    load_dataset,
    load_series,
    load_windowed,
    make_loader,
    split_series,
)


def make_series(n: int, source: str = "tiny") -> Series:
    return Series(np.arange(n, dtype=float), np.arange(n, dtype=float), source)


def at(path) -> str:
    """Returns a pattern for an error message that starts with path."""
    return "^" + re.escape(str(path)) + ": "


def collect(loader) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(v) for k, v in b.items()} for b in loader]


def write_windows(path, y: np.ndarray, width: int, stride: int) -> None:
    starts = np.arange(0, len(y) - width + 1, stride)
    rows = y[starts[:, None] + np.arange(width)]
    lines = ["\t".join(repr(float(v)) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


# Toy data files.


def test_make_data_regenerates_the_same_bytes(tmp_path):
    written = make_data.write_toy_data(tmp_path)

    assert len(written) == 4
    for path in written:
        assert path.read_bytes() == (DATA_DIR / path.name).read_bytes()


@pytest.mark.parametrize(
    "name, rows, first_t, last_t",
    [
        ("sine_train.csv", 960, 0.0, 239.75),
        ("sine_test.csv", 240, 240.0, 299.75),
        ("linear_train.csv", 960, 0.0, 239.75),
        ("linear_test.csv", 240, 240.0, 299.75),
    ],
)
def test_toy_files_have_their_rows_and_times(name, rows, first_t, last_t):
    path = DATA_DIR / name
    series = load_series(path)

    assert path.read_text().splitlines()[0] == "t,y"
    assert len(series) == rows
    assert series.t[0] == first_t and series.t[-1] == last_t
    assert np.all(np.diff(series.t) == 0.25)


def test_toy_values_follow_their_formulas():
    linear = load_series(DATA_DIR / "linear_test.csv")
    sine = load_series(DATA_DIR / "sine_train.csv")

    np.testing.assert_array_equal(linear.y, 0.5 * linear.t)
    np.testing.assert_allclose(sine.y, np.sin(0.2 * np.pi * sine.t), atol=1e-12)


# Reading files.


def test_csv_uses_t_and_y_columns_by_name(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("note,y,t\na,10,0.5\nb,11,1.0\n")

    series = load_series(path)

    np.testing.assert_array_equal(series.t, [0.5, 1.0])
    np.testing.assert_array_equal(series.y, [10.0, 11.0])
    assert series.source == str(path)


@pytest.mark.parametrize("text", ["value\n3\n4\n5\n", "3\n4\n5\n"])
def test_single_column_is_indexed_from_zero(tmp_path, text):
    path = tmp_path / "s.txt"
    path.write_text(text)

    series = load_series(path)

    np.testing.assert_array_equal(series.t, [0, 1, 2])
    np.testing.assert_array_equal(series.y, [3, 4, 5])


@pytest.mark.parametrize("stride", [1, 3])
def test_windowed_file_rebuilds_the_series(tmp_path, stride):
    y = load_series(DATA_DIR / "sine_train.csv").y
    path = tmp_path / "windows.tsv"
    write_windows(path, y, width=40 + 20, stride=stride)

    series = load_series(path)

    np.testing.assert_array_equal(series.y, y)
    np.testing.assert_array_equal(series.t, np.arange(len(y)))


def test_single_window_row_is_its_own_series(tmp_path):
    path = tmp_path / "one.tsv"
    path.write_text("1\t2\t3\t4\t5\n")

    series = load_windowed(path, in_len=3)

    np.testing.assert_array_equal(series.y, [1, 2, 3, 4, 5])


def test_windowed_odd_rows_need_in_len(tmp_path):
    path = tmp_path / "odd.tsv"
    write_windows(path, np.arange(10.0), width=5, stride=1)

    with pytest.raises(InputError, match=at(path) + ".*odd"):
        load_series(path)
    assert len(load_windowed(path, in_len=3)) == 10


def test_windowed_ragged_rows_name_the_line(tmp_path):
    path = tmp_path / "ragged.tsv"
    path.write_text("1\t2\t3\t4\n2\t3\t4\t5\n3\t4\t5\n")

    with pytest.raises(InputError, match=at(path) + "line 3 "):
        load_series(path)


def test_windowed_rows_must_chain(tmp_path):
    path = tmp_path / "shuffled.tsv"
    path.write_text("1\t2\t3\t4\n7\t8\t9\t10\n2\t3\t4\t5\n")

    with pytest.raises(InputError, match="do not overlap as windows"):
        load_series(path)


BAD_FILES = {
    "missing": (None, "no such file"),
    "empty": ("", "empty"),
    "blank lines only": ("\n  \n", "empty"),
    "header only": ("t,y\n", "no values"),
    "no time column": ("a,b\nx,z\n", "no 't' column"),
    "no value column": ("a,b\n1,x\n", "no 'y' column"),
    "no header": ("0,1\n1,2\n", "line 1 holds numbers"),
    "date then text": ("d,v\n2020-01-01,1\nlater,2\n", "line 3"),
    "missing cell": ("t,y\n0,1\n1\n", "line 3"),
    "non-numeric cell": ("t,y\n0,1\n1,abc\n", "line 3"),
    "NaN": ("t,y\n0,1\n1,nan\n", "line 3"),
    "infinite": ("t,y\n0,-inf\n1,2\n", "line 2"),
    "t repeats": ("t,y\n0,1\n1,2\n1,3\n", "line 4"),
    "t decreases": ("t,y\n0,1\n2,2\n1,3\n", "line 4"),
    "t unevenly spaced": ("t,y\n0,1\n1,2\n2,3\n3.5,4\n", "line 5"),
    "column header only": ("value\n", "no values"),
    "column non-numeric": ("value\n1\nx\n", "line 3"),
    "column NaN": ("1\nnan\n", "line 2"),
    "windowed non-numeric": ("1\t2\n2\tz\n", "line 2"),
    "windowed infinite": ("1\t2\n2\tinf\n", "line 2"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_raises_input_error_naming_it(tmp_path, case):
    text, problem = BAD_FILES[case]
    path = tmp_path / "series.csv"
    if text is not None:
        path.write_text(text)

    with pytest.raises(InputError, match=at(path) + ".*" + re.escape(problem)):
        load_series(path)


def test_directory_raises_input_error(tmp_path):
    with pytest.raises(InputError, match=at(tmp_path) + "is a directory"):
        load_series(tmp_path)


def test_unreadable_file_raises_input_error(tmp_path, monkeypatch):
    path = tmp_path / "secret.csv"
    path.write_text("t,y\n0,1\n")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything; refuse by hand

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(pathlib.Path, "read_text", refuse)

    with pytest.raises(InputError, match=at(path) + "permission denied"):
        load_series(path)


# Splits by time.


def test_split_series_takes_val_from_the_end_of_training():
    splits = split_series(make_series(100), test_start=80, val_fraction=0.2)

    assert splits.train.t[[0, -1]].tolist() == [0, 63]
    assert splits.val.t[[0, -1]].tolist() == [64, 79]
    assert splits.test.t[[0, -1]].tolist() == [80, 99]


def test_toy_splits_fall_on_the_time_boundaries():
    splits = load_dataset("sine")

    assert splits.train.t[[0, -1]].tolist() == [0.0, 191.75]
    assert splits.val.t[[0, -1]].tolist() == [192.0, 239.75]
    assert splits.test.t[[0, -1]].tolist() == [240.0, 299.75]


def test_series_file_loses_its_last_test_fraction(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("\n".join(str(v) for v in range(100)))

    splits = load_dataset(str(path), test_fraction=0.2, val_fraction=0.25)

    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [
        60,
        20,
        20,
    ]
    assert splits.test.y[0] == 80


def test_toy_test_file_must_continue_the_train_times(tmp_path):
    (tmp_path / "sine_train.csv").write_text("t,y\n0,0\n1,0\n2,0\n")
    (tmp_path / "sine_test.csv").write_text("t,y\n4,0\n5,0\n")
    test_path = tmp_path / "sine_test.csv"

    with pytest.raises(InputError, match=at(test_path) + "t does not continue"):
        load_dataset("sine", data_dir=tmp_path)


# Windows.


def test_windows_have_exact_starts_and_values():
    series = Series(10 + 0.5 * np.arange(10), np.arange(10.0), "tiny")

    windows = WindowDataset(series, in_len=3, out_len=2, stride=2)

    assert len(windows) == 3
    np.testing.assert_array_equal(windows.starts, [0, 2, 4])
    context, target = windows[1]
    assert context.dtype == target.dtype == np.float32
    np.testing.assert_array_equal(context, [2, 3, 4])
    np.testing.assert_array_equal(target, [5, 6])
    np.testing.assert_array_equal(
        windows.contexts(), [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    )
    np.testing.assert_array_equal(windows.targets(), [[3, 4], [5, 6], [7, 8]])
    np.testing.assert_array_equal(windows.target_times(2), [13.5, 14.0])


@pytest.mark.parametrize(
    "n, in_len, out_len, stride, expected",
    [(5, 3, 2, 1, 1), (4, 3, 2, 1, 0), (0, 3, 2, 1, 0), (10, 3, 2, 3, 2)],
)
def test_window_count(n, in_len, out_len, stride, expected):
    windows = WindowDataset(make_series(n), in_len, out_len, stride)

    assert len(windows) == expected
    assert windows.contexts().shape == (expected, in_len)
    assert windows.targets().shape == (expected, out_len)


@pytest.mark.parametrize(
    "split, first_t, last_t",
    [("train", 0.0, 191.75), ("val", 192.0, 239.75), ("test", 240.0, 299.75)],
)
def test_windows_stay_inside_their_split(split, first_t, last_t):
    series = getattr(load_dataset("linear"), split)
    windows = WindowDataset(series, in_len=40, out_len=20)

    context_t = series.t[windows.starts[:, None] + np.arange(40)]
    target_t = np.stack([windows.target_times(i) for i in range(len(windows))])
    assert context_t.min() == first_t and target_t.max() == last_t
    assert np.all(context_t[:, -1] < target_t[:, 0])
    # linear is y = t / 2, so the values show which times were cut.
    np.testing.assert_array_equal(windows.contexts(), context_t / 2)
    np.testing.assert_array_equal(windows.targets(), target_t / 2)


def test_check_windows_names_a_too_short_split():
    windows = WindowDataset(make_series(4), in_len=3, out_len=2)

    with pytest.raises(InputError) as error:
        check_windows(windows, "test", "short.csv")

    assert str(error.value) == (
        "short.csv: the test split has 4 samples, fewer than one window "
        "(in_len + out_len = 5)"
    )
    check_windows(WindowDataset(make_series(5), 3, 2), "test", "ok.csv")


# Batches.


def test_eval_batches_keep_order_and_pad_the_last_one():
    windows = WindowDataset(make_series(11), in_len=3, out_len=2)  # 7

    batches = list(make_loader(windows, 3, train=False))

    assert len(batches) == 3
    for batch in batches:
        assert all(isinstance(v, jax.Array) for v in batch.values())
        assert all(v.dtype == jnp.float32 for v in batch.values())
        assert batch["context"].shape == (3, 3)
        assert batch["target"].shape == (3, 2)
        assert batch["mask"].shape == (3,)
    assert batches[-1]["mask"].tolist() == [1, 0, 0]
    context = np.concatenate([b["context"] for b in batches])
    target = np.concatenate([b["target"] for b in batches])
    np.testing.assert_array_equal(context[:7], windows.contexts())
    np.testing.assert_array_equal(target[:7], windows.targets())
    np.testing.assert_array_equal(context[7:], windows.contexts()[[6, 6]])


def test_train_batches_are_full_shuffled_and_seeded():
    windows = WindowDataset(make_series(14), in_len=3, out_len=2)  # 10

    first = collect(make_loader(windows, 4, train=True, seed=0))
    again = collect(make_loader(windows, 4, train=True, seed=0))
    other = collect(make_loader(windows, 4, train=True, seed=1))

    assert len(first) == 2  # 10 windows, the last 2 dropped
    assert all(b["mask"].tolist() == [1, 1, 1, 1] for b in first)
    starts = np.concatenate([b["context"][:, 0] for b in first])
    assert len(set(starts.tolist())) == 8
    assert starts.tolist() != sorted(starts.tolist())
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["context"], b["context"])
    assert any(
        not np.array_equal(a["context"], b["context"])
        for a, b in zip(first, other, strict=True)
    )


def test_set_epoch_fixes_the_order_by_seed_and_epoch():
    windows = WindowDataset(make_series(14), in_len=3, out_len=2)
    loader = make_loader(windows, 4, train=True, seed=7)
    fresh = make_loader(windows, 4, train=True, seed=7)

    def order(loader, epoch):
        loader.set_epoch(epoch)
        return np.concatenate([b["context"][:, 0] for b in loader]).tolist()

    epoch_3 = order(loader, 3)
    assert order(loader, 4) != epoch_3
    assert order(fresh, 3) == epoch_3


def test_small_train_set_becomes_one_batch_with_a_warning(caplog):
    windows = WindowDataset(make_series(7), in_len=3, out_len=2)  # 3

    with caplog.at_level(logging.WARNING, logger=Dataloader.__name__):
        batches = list(make_loader(windows, 8, train=True))

    assert len(batches) == 1
    assert batches[0]["context"].shape == (3, 3)
    assert "fewer than batch_size 8" in caplog.text


def test_worker_processes_give_the_same_batches_without_fork():
    windows = WindowDataset(make_series(30), in_len=3, out_len=2)
    jnp.zeros(1).block_until_ready()  # JAX's threads are running now

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaders = [
            make_loader(windows, 4, train=True, seed=3, num_workers=workers)
            for workers in (0, 2)
        ]
        epochs = []
        for loader in loaders:
            for epoch in range(2):
                loader.set_epoch(epoch)
                epochs.append(collect(loader))

    assert not [w for w in caught if "fork" in str(w.message)]
    assert loaders[1].multiprocessing_context.get_start_method() == "spawn"
    assert len(epochs[0]) == 6
    for single, multi in zip(epochs[:2], epochs[2:], strict=True):
        for a, b in zip(single, multi, strict=True):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
