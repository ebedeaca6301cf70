"""Specifications of RUN.py: tiny end-to-end runs, bad input, accuracy."""

import contextlib
import dataclasses
import io
import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import experiment
import RUN
from Dataloader import load_dataset

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "2", "--hidden", "8", "--in-len", "8", "--out-len", "4"]
METRICS = (
    "test_window_mse",
    "test_window_mae",
    "rollout_mse",
    "rollout_max_abs_error",
    "baseline_last_value_mse",
    "epochs",
    "best_epoch",
    "train_seconds",
)
PLOTS = ("example_trajectory.png", "test_stitched.png", "rollout.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_main(argv: list[str]) -> tuple[int, str]:
    """RUN.main in this process: its exit status and what it printed."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = RUN.main(argv)
    return status, stdout.getvalue()


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "RUN.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def write_windowed(path: Path, y: np.ndarray, width: int) -> None:
    """Writes every stride-1 window of y as one tab-separated row."""
    rows = y[np.arange(len(y) - width + 1)[:, None] + np.arange(width)]
    lines = ["\t".join(repr(float(v)) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def sine_values() -> np.ndarray:
    splits = load_dataset("sine")
    return np.concatenate([splits.train.y, splits.val.y, splits.test.y])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run on the sine series: (exit status, stdout, run dir)."""
    workdir = tmp_path_factory.mktemp("tiny")
    argv = ["--dataset", "sine", *TINY, "--workdir", str(workdir), "--quiet"]
    status, stdout = run_main(argv)
    return status, stdout, workdir / "sine"


# End to end.


def test_tiny_run_writes_checkpoints_plots_and_metrics(tiny_run):
    status, stdout, run_dir = tiny_run

    assert status == 0
    assert any((run_dir / "checkpoints").iterdir())
    for name in PLOTS:
        content = (run_dir / name).read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 1000
    metrics = read_metrics(run_dir)
    for key in METRICS:
        assert math.isfinite(metrics[key]), key
    assert metrics["epochs"] == 2
    assert 0 <= metrics["best_epoch"] <= 2
    assert metrics["train_seconds"] > 0
    assert metrics["config"]["hidden"] == 8


def test_tiny_run_prints_a_summary_row_for_its_dataset(tiny_run):
    status, stdout, run_dir = tiny_run
    metrics = read_metrics(run_dir)

    rows = [line.split() for line in stdout.splitlines() if line.strip()]

    assert status == 0
    assert rows[0][0] == "dataset"
    assert len(rows) == 2 and rows[1][0] == "sine"
    assert f"{metrics['test_window_mse']:.3e}" in rows[1]


def test_restore_recreates_the_metrics_without_training(
    tiny_run, tmp_path, monkeypatch
):
    _, _, run_dir = tiny_run
    trained = read_metrics(run_dir)

    def no_training(*args, **kwargs):
        raise AssertionError("--restore must not train")

    untrained = dataclasses.replace(experiment.JAX, train=no_training)
    monkeypatch.setattr(experiment, "JAX", untrained)
    monkeypatch.setattr(experiment, "train_epoch", no_training)
    checkpoints = str(run_dir / "checkpoints")
    argv = ["--restore", checkpoints, "--workdir", str(tmp_path), "--quiet"]
    status, stdout = run_main(argv)

    restored = read_metrics(tmp_path / "sine" / "restored")
    assert status == 0
    assert "sine" in stdout
    for key in METRICS:
        if key != "train_seconds":
            assert restored[key] == trained[key], key
    for name in PLOTS:
        assert (tmp_path / "sine" / "restored" / name).stat().st_size > 0


def test_windowed_file_trains_like_the_series_it_was_cut_from(
    tiny_run, tmp_path
):
    _, _, run_dir = tiny_run
    path = tmp_path / "sine_windows.tsv"
    write_windowed(path, sine_values(), width=12)
    workdir = tmp_path / "runs"

    argv = ["--dataset", str(path), *TINY, "--workdir", str(workdir)]
    status, stdout = run_main([*argv, "--quiet"])

    metrics = read_metrics(workdir / "sine_windows")
    assert status == 0
    assert "sine_windows" in stdout
    # The same values in the same splits, trained from the same seed.
    trained = read_metrics(run_dir)
    for key in METRICS:
        if key != "train_seconds":
            assert metrics[key] == trained[key], key


def test_script_runs_from_the_command_line(tmp_path):
    args = ["--dataset", "sine", "--epochs", "1", *TINY[2:]]

    result = run_script(*args, "--workdir", str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "sine" in result.stdout
    assert read_metrics(tmp_path / "sine")["epochs"] == 1


# Bad input: status 2, one line naming the culprit, nothing overwritten.


def assert_one_error_line(stderr: str, culprit: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("RUN.py: error: ")
    assert culprit in lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["--dataset", "/no/such/file.csv"], "/no/such/file.csv"),
        (["--encoder", "foo"], "--encoder"),
        (["--lr", "abc"], "--lr"),
    ],
)
def test_script_rejects_bad_input_in_one_line(tmp_path, args, culprit):
    result = run_script(*args, "--workdir", str(tmp_path))

    assert result.returncode == 2
    assert_one_error_line(result.stderr, culprit)
    assert list(tmp_path.iterdir()) == []


BAD_FILES = {
    "empty.csv": "",
    "words.csv": "t,y\n0,1.0\n1,abc\n2,3.0\n",
    "nan.csv": "t,y\n0,1.0\n1,nan\n2,3.0\n",
    "short.csv": "t,y\n" + "".join(f"{i},{i}\n" for i in range(20)),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_series_file_fails_in_one_line_naming_it(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_text(BAD_FILES[name])
    workdir = tmp_path / "runs"
    kept = workdir / path.stem / "metrics.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("an earlier run's\n")

    argv = ["--dataset", str(path), *TINY, "--workdir", str(workdir)]
    status, stdout = run_main(argv)

    assert status == 2
    assert_one_error_line(capsys.readouterr().err, str(path))
    assert kept.read_text() == "an earlier run's\n"
    assert sorted(p.name for p in kept.parent.iterdir()) == ["metrics.json"]
    assert stdout == ""


@pytest.mark.parametrize("too_much", ["devices", "series"])
def test_input_refused_in_training_leaves_no_empty_folders(
    tmp_path, capsys, too_much
):
    short = tmp_path / "short.csv"
    short.write_text("t,y\n" + "".join(f"{t},{t}\n" for t in range(10)))
    if too_much == "devices":  # one CPU device here
        args, culprit = ["--dataset", "all", "--devices", "3"], "--devices"
    else:  # fewer samples than one window
        args, culprit = ["--dataset", str(short)], str(short)
    workdir = tmp_path / "runs"

    status, _ = run_main([*args, "--workdir", str(workdir), "--quiet"])

    assert status == 2
    assert_one_error_line(capsys.readouterr().err, culprit)
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["--epochs", "-1"], "--epochs"),
        (["--jobs", "-1"], "--jobs"),
        (["--hidden", "0"], "--hidden"),
        (["--out-len", "0"], "--out-len"),
        (["--encoder", "foo"], "--encoder"),
        (["--lr", "abc"], "--lr"),
        (["--restore", "/no/such/run"], "/no/such/run"),
    ],
)
def test_bad_flag_fails_in_one_line_naming_it(tmp_path, capsys, args, culprit):
    kept = tmp_path / "sine" / "metrics.json"
    kept.parent.mkdir()
    kept.write_text("an earlier run's\n")

    argv = ["--dataset", "sine", *args, "--workdir", str(tmp_path)]
    try:
        status, _ = run_main(argv)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code

    assert status == 2
    assert_one_error_line(capsys.readouterr().err, culprit)
    assert kept.read_text() == "an earlier run's\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sine"]


# Series trained side by side.


@pytest.mark.parametrize(
    "flags, devices, runs",
    [
        (["--jobs", "2"], 1, 2),
        (["--jobs", "2"], 4, 1),  # each batch split: one run at a time
        (["--jobs", "2", "--devices", "1"], 4, 2),
        (["--jobs", "2", "--distributed"], 1, 1),
    ],
)
def test_series_train_side_by_side_unless_they_share_collectives(
    flags, devices, runs
):
    args = RUN.parse_args(flags)
    assert RUN.concurrent_runs(args, experiment.JAX, devices) == runs


def test_series_trained_side_by_side_give_the_numbers_of_one_at_a_time(
    tmp_path,
):
    both = ["--dataset", "all", *TINY, "--quiet"]
    one_by_one = run_main([*both, "--jobs", "1", "--workdir", str(tmp_path)])
    side_by_side = run_main(
        [*both, "--jobs", "2", "--workdir", str(tmp_path / "jobs2")]
    )

    assert one_by_one[0] == side_by_side[0] == 0
    for dataset in ("sine", "linear"):
        alone = read_metrics(tmp_path / dataset)
        together = read_metrics(tmp_path / "jobs2" / dataset)
        assert alone.pop("train_seconds") > 0
        assert together.pop("train_seconds") > 0
        assert together == alone, dataset


def test_a_failing_run_stops_the_runs_beside_it():
    stopped = []

    def fails():
        raise ValueError("this run fails")

    def runs_until_stopped():
        stopped.append(experiment.STOP.wait(timeout=60))
        raise experiment.Stopped  # as run_epochs does when STOP is set

    with pytest.raises(ValueError, match="this run fails"):
        experiment.run_in_threads([runs_until_stopped, fails], jobs=2)
    assert stopped == [True]
    assert not experiment.STOP.is_set()


@pytest.mark.parametrize(
    "second, logged",
    [("the same error", False), ("another error", True)],
)
def test_a_failure_beside_the_first_is_logged_unless_it_repeats_it(
    second, logged, caplog
):
    both_started = threading.Barrier(2)

    def fails(message):
        both_started.wait(timeout=60)
        raise ValueError(message)

    calls = [lambda: fails("the same error"), lambda: fails(second)]
    with pytest.raises(ValueError, match="the same error"):
        experiment.run_in_threads(calls, jobs=2)
    assert ("failed too: " + second in caplog.text) == logged


# Accuracy of the default configuration.


def run_default(workdir: Path, dataset: str) -> dict:
    status, _ = run_main(["--dataset", dataset, "--workdir", str(workdir)])
    assert status == 0
    return read_metrics(workdir / Path(dataset).stem)


@pytest.mark.slow
def test_default_config_forecasts_the_sine(tmp_path):
    metrics = run_default(tmp_path, "sine")

    assert metrics["test_window_mse"] <= 1e-5
    assert metrics["rollout_mse"] <= 1e-3


@pytest.mark.slow
def test_default_config_forecasts_the_line(tmp_path):
    metrics = run_default(tmp_path, "linear")

    assert metrics["test_window_mse"] <= 1e-5
    assert metrics["rollout_max_abs_error"] <= 0.05


@pytest.mark.slow
def test_default_config_forecasts_the_windowed_sine(tmp_path):
    path = tmp_path / "sine_windows.tsv"
    write_windowed(path, sine_values(), width=60)

    metrics = run_default(tmp_path / "runs", str(path))

    assert metrics["test_window_mse"] <= 1e-5
    assert metrics["rollout_mse"] <= 1e-3
