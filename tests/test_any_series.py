"""Specifications of reading any series file: columns, dates, gaps, fill."""

import contextlib
import importlib.util
import io
import json
import logging
import re

import numpy as np
import pytest

import Dataloader
import RUN
from config import InputError
from data import export_example
from Dataloader import DATA_DIR, Series, load_dataset, load_series


def write(tmp_path, text: str, name: str = "series.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def at(path) -> str:
    """Returns a pattern for an error message that starts with path."""
    return "^" + re.escape(str(path)) + ": "


def days(stamps: np.ndarray) -> list[str]:
    return [str(s) for s in stamps.astype("datetime64[D]")]


# Date columns.


def test_daily_dates_count_days_and_keep_the_stamps(tmp_path):
    path = write(tmp_path, "day,v\n2020-02-28,1\n2020-02-29,2\n2020-03-01,3\n")

    series = load_series(path)

    np.testing.assert_array_equal(series.t, [0, 1, 2])
    np.testing.assert_array_equal(series.y, [1, 2, 3])
    assert series.stamps.dtype == np.dtype("datetime64[us]")
    assert days(series.stamps) == ["2020-02-28", "2020-02-29", "2020-03-01"]


def test_hourly_date_times_in_either_iso_form(tmp_path):
    path = write(
        tmp_path,
        "when,v\n2020-01-31T23:00,1\n2020-02-01 00:00:00,2\n"
        "2020-02-01T01:00:00,3\n",
    )

    series = load_series(path)

    np.testing.assert_array_equal(series.t, [0, 1, 2])
    assert [str(s) for s in series.stamps.astype("datetime64[h]")] == [
        "2020-01-31T23",
        "2020-02-01T00",
        "2020-02-01T01",
    ]


def test_zoned_times_are_read_in_utc(tmp_path):
    # Across a clock change the local hours repeat; UTC's do not.
    path = write(
        tmp_path,
        "t,y\n2020-10-25T02:00+02:00,1\n2020-10-25T02:00+01:00,2\n"
        "2020-10-25T03:00+01:00,3\n",
    )

    series = load_series(path)

    assert [str(s) for s in series.stamps.astype("datetime64[h]")] == [
        "2020-10-25T00",
        "2020-10-25T01",
        "2020-10-25T02",
    ]


@pytest.mark.parametrize(
    "dates",
    [
        ["2019-11-01", "2019-12-01", "2020-01-01", "2020-02-01", "2020-03-01"],
        ["2019-11", "2019-12", "2020-01", "2020-02", "2020-03"],
        ["2019-11-30", "2019-12-31", "2020-01-31", "2020-02-29", "2020-03-31"],
        ["2019-11-15", "2019-12-15", "2020-01-15", "2020-02-15", "2020-03-15"],
    ],
    ids=["first days", "year-month", "month ends", "same day"],
)
def test_monthly_dates_are_even_on_the_calendar(tmp_path, dates):
    path = write(tmp_path, "month,v\n" + "".join(f"{d},1\n" for d in dates))

    series = load_series(path)

    np.testing.assert_array_equal(series.t, np.arange(5))


def test_quarterly_gap_is_filled_on_the_calendar(tmp_path):
    path = write(
        tmp_path,
        "q,v\n2019-01-31,0\n2019-04-30,1\n2019-10-31,3\n2020-01-31,4\n",
    )

    series = load_series(path, fill="linear")

    assert days(series.stamps) == [
        "2019-01-31",
        "2019-04-30",
        "2019-07-31",
        "2019-10-31",
        "2020-01-31",
    ]
    np.testing.assert_array_equal(series.y, [0, 1, 2, 3, 4])


def test_slices_keep_their_stamps(tmp_path):
    path = write(tmp_path, "d,v\n2020-01-01,1\n2020-01-02,2\n2020-01-03,3\n")

    part = load_series(path)[1:]

    np.testing.assert_array_equal(part.t, [1, 2])
    assert days(part.stamps) == ["2020-01-02", "2020-01-03"]
    assert Series(np.zeros(2), np.zeros(2), "numbers").stamps is None


# Choosing the columns.


def test_columns_chosen_by_name(tmp_path):
    path = write(tmp_path, "a,when,b,c\n1,2020-01-01,5,7\n2,2020-01-02,6,8\n")

    series = load_series(path, time_column="when", value_column="c")

    np.testing.assert_array_equal(series.y, [7, 8])
    assert days(series.stamps) == ["2020-01-01", "2020-01-02"]


def test_default_columns_are_t_and_y_when_present(tmp_path):
    path = write(tmp_path, "x,y,t\n9,10,0\n8,11,1\n")

    series = load_series(path)

    np.testing.assert_array_equal(series.t, [0, 1])
    np.testing.assert_array_equal(series.y, [10, 11])


def test_default_columns_are_the_first_time_and_next_numeric(tmp_path):
    path = write(
        tmp_path,
        '"name","DATE","note","VALUE","other"\n'
        "a,2020-01-01,x,5,7\nb,2020-01-02,y,6,8\n",
    )

    series = load_series(path)

    np.testing.assert_array_equal(series.y, [5, 6])
    assert days(series.stamps) == ["2020-01-01", "2020-01-02"]


def test_value_column_alone_leaves_time_to_the_default(tmp_path):
    path = write(tmp_path, "year,a,b\n1990,1,2\n1991,3,4\n")

    series = load_series(path, value_column="b")

    np.testing.assert_array_equal(series.t, [1990, 1991])
    np.testing.assert_array_equal(series.y, [2, 4])


@pytest.mark.parametrize(
    "columns, problem",
    [
        ({"time_column": "when"}, "no column 'when' (the header has t, y)"),
        ({"value_column": "v"}, "no column 'v' (the header has t, y)"),
        (
            {"time_column": "t", "value_column": "t"},
            "'t' cannot be both the time and the value",
        ),
    ],
)
def test_bad_column_names_are_input_errors(tmp_path, columns, problem):
    path = write(tmp_path, "t,y\n0,1\n1,2\n")

    with pytest.raises(InputError, match=at(path) + re.escape(problem)):
        load_series(path, **columns)


def test_columns_need_a_csv(tmp_path):
    path = write(tmp_path, "1\n2\n3\n", name="column.txt")

    with pytest.raises(InputError, match=at(path) + ".*only in a CSV"):
        load_series(path, value_column="y")


# Gaps, off-grid rows, repeats.

GAPPY = "t,y\n0,0\n1,10\n4,40\n5,50\n7,70\n"  # 2, 3 and 6 are missing


def test_gaps_are_reported_with_their_rows(tmp_path):
    path = write(tmp_path, GAPPY)

    with pytest.raises(InputError) as error:
        load_series(path)

    assert str(error.value) == (
        f"{path}: t has gaps in steps of 1: 2 missing after line 3 (t = 1); "
        "1 missing after line 5 (t = 5) "
        "(--fill linear or --fill previous fills them)"
    )


def test_many_gaps_name_the_first_few(tmp_path):
    rows = "".join(f"2020-01-{d:02d},{d}\n" for d in range(1, 30, 2))
    path = write(tmp_path, "date,v\n" + rows)
    rows = "".join(f"{t},{t}\n" for t in range(20) if t not in (3, 6, 9, 12))
    dense = write(tmp_path, "t,y\n" + rows, name="dense.csv")

    with pytest.raises(InputError) as error:
        load_series(dense)

    assert str(error.value).endswith(
        "1 missing after line 4 (t = 2); 1 missing after line 6 (t = 5); "
        "1 missing after line 8 (t = 8); and 1 more "
        "(--fill linear or --fill previous fills them)"
    )
    # Every other day: the step is two days, so nothing is missing.
    assert len(load_series(path)) == 15


@pytest.mark.parametrize(
    "fill, expected",
    [
        ("linear", [0, 10, 20, 30, 40, 50, 60, 70]),
        ("previous", [0, 10, 10, 10, 40, 50, 50, 70]),
    ],
)
def test_fill_inserts_the_missing_steps(tmp_path, caplog, fill, expected):
    path = write(tmp_path, GAPPY)

    with caplog.at_level(logging.INFO, logger=Dataloader.__name__):
        series = load_series(path, fill=fill)

    np.testing.assert_array_equal(series.t, np.arange(8))
    np.testing.assert_array_equal(series.y, expected)
    assert f"3 of 8 points filled ({fill})" in caplog.text


def test_fill_keeps_the_grid_of_dates(tmp_path):
    path = write(tmp_path, "d,v\n2020-01-30,1\n2020-01-31,2\n2020-02-03,5\n")

    series = load_series(path, fill="linear")

    np.testing.assert_array_equal(series.t, np.arange(5))
    np.testing.assert_array_equal(series.y, [1, 2, 3, 4, 5])
    assert days(series.stamps) == [
        "2020-01-30",
        "2020-01-31",
        "2020-02-01",
        "2020-02-02",
        "2020-02-03",
    ]


@pytest.mark.parametrize("fill", ["none", "linear", "previous"])
def test_rows_off_the_grid_are_an_error_even_with_fill(tmp_path, fill):
    path = write(tmp_path, "t,y\n0,1\n1,2\n2,3\n3.5,4\n4,5\n6.25,6\n")

    with pytest.raises(InputError) as error:
        load_series(path, fill=fill)

    assert str(error.value) == (
        f"{path}: t is not evenly spaced (most common step 1); off that "
        "grid: line 5 (t = 3.5); line 7 (t = 6.25)"
    )


def test_dates_off_the_grid_are_named(tmp_path):
    path = write(
        tmp_path,
        "d,v\n2020-01-01,1\n2020-02-01,2\n2020-03-15,3\n2020-04-01,4\n"
        "2020-05-01,5\n",
    )

    with pytest.raises(InputError, match=at(path) + ".*1 month.*line 4 "):
        load_series(path, fill="linear")


@pytest.mark.parametrize("fill", ["none", "linear", "previous"])
def test_repeated_times_are_an_error_even_with_fill(tmp_path, fill):
    path = write(tmp_path, "d,v\n2020-01-01,1\n2020-01-02,2\n2020-01-02,3\n")

    with pytest.raises(InputError) as error:
        load_series(path, fill=fill)

    assert str(error.value) == (
        f"{path}: d repeats: line 4 (d = 2020-01-02) as on line 3"
    )


# Through load_dataset and RUN.py.


def daily_csv(tmp_path, n: int = 120, skip: tuple[int, ...] = ()):
    stamps = np.datetime64("2021-01-01") + np.arange(n)
    y = np.sin(2 * np.pi * np.arange(n) / 7)
    rows = [
        f"{stamp},{float(value)!r}\n"
        for i, (stamp, value) in enumerate(zip(stamps, y, strict=True))
        if i not in skip
    ]
    return write(tmp_path, "date,level\n" + "".join(rows), name="daily.csv")


def test_dataset_splits_a_dated_file_by_time(tmp_path):
    path = daily_csv(tmp_path, n=100, skip=(10, 11))

    splits = load_dataset(
        str(path), test_fraction=0.2, val_fraction=0.25, fill="previous"
    )

    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [
        60,
        20,
        20,
    ]
    assert days(splits.test.stamps[:1]) == ["2021-03-22"]
    assert splits.train.y[10] == splits.train.y[11] == splits.train.y[9]


def test_run_trains_on_a_dated_file_with_gaps(tmp_path):
    path = daily_csv(tmp_path, skip=(30, 31, 32))
    argv = [
        "--dataset",
        str(path),
        "--epochs",
        "2",
        "--hidden",
        "8",
        "--in-len",
        "8",
        "--out-len",
        "4",
        "--fill",
        "linear",
        "--workdir",
        str(tmp_path / "runs"),
        "--quiet",
    ]

    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        status = RUN.main(argv)

    assert status == 0
    metrics = json.loads((tmp_path / "runs/daily/metrics.json").read_text())
    assert metrics["config"]["fill"] == "linear"
    assert metrics["rollout_steps"] == 24
    assert "daily" in stdout.getvalue()


def test_run_names_the_gaps_without_fill(tmp_path, capsys):
    path = daily_csv(tmp_path, skip=(30,))

    status = RUN.main(["--dataset", str(path), "--workdir", str(tmp_path)])

    assert status == 2
    assert capsys.readouterr().err == (
        f"RUN.py: error: {path}: date has gaps in steps of 1 day: 1 missing "
        "after line 31 (date = 2021-01-30) "
        "(--fill linear or --fill previous fills them)\n"
    )


# The shipped example.


def test_example_series_is_monthly_and_complete():
    series = load_series(DATA_DIR / "elec_equip.csv")

    assert len(series) == 257
    assert days(series.stamps[[0, -1]]) == ["1995-01-01", "2016-05-01"]
    np.testing.assert_array_equal(series.t, np.arange(257))


@pytest.mark.skipif(
    importlib.util.find_spec("statsmodels") is None,
    reason="statsmodels, which ships the series, is not installed",
)
def test_example_export_regenerates_the_same_bytes(tmp_path):
    path = export_example.write_example(tmp_path)

    assert path.read_bytes() == (DATA_DIR / "elec_equip.csv").read_bytes()
