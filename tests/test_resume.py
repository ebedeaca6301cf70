"""A run killed at any moment, then rerun, ends as an unbroken run does."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from TrainTest import open_checkpoints, restore_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--dataset", "sine", "--epochs", "6", "--hidden", "8", "--in-len", "8",
    "--out-len", "4", "--batch-size", "64", "--checkpoint-every", "1",
    "--quiet",
]  # fmt: skip


def start(workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "RUN.py", *TINY, "--workdir", str(workdir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(workdir: Path) -> None:
    process = start(workdir)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr


def final_state(workdir: Path):
    manager = open_checkpoints(workdir / "sine")
    model, meta = restore_checkpoint(manager, "latest")
    manager.close()
    return model, meta


def metrics_without_timings(workdir: Path) -> dict:
    metrics = json.loads((workdir / "sine" / "metrics.json").read_text())
    metrics.pop("train_seconds")
    return metrics


def wait_for_step(workdir: Path, step: int, process, timeout=120.0) -> None:
    """Returns once a save of `step` has begun: its temporary folder, or
    the final one, is there."""
    checkpoints = workdir / "sine" / "checkpoints"
    deadline = time.monotonic() + timeout
    while not any(checkpoints.glob(f"{step}*")):
        assert process.poll() is None, "run ended before the kill point"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("unbroken")
    finish(workdir)
    return workdir


# Kill points: as a checkpoint's folder appears (its save under way), and
# mid-training between two saves. Each point costs two runs, so: slow.
@pytest.mark.slow
@pytest.mark.parametrize("step, delay", [(1, 0.0), (3, 0.3)])
def test_resume_after_sigkill_matches_unbroken_run(
    tmp_path, unbroken, step, delay
):
    process = start(tmp_path)
    wait_for_step(tmp_path, step, process)
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    finish(tmp_path)

    resumed, resumed_meta = final_state(tmp_path)
    reference, reference_meta = final_state(unbroken)
    assert resumed_meta["epoch"] == reference_meta["epoch"] == 6
    pairs = zip(
        jax.tree.leaves((resumed.encoder, resumed.decoder)),
        jax.tree.leaves((reference.encoder, reference.decoder)),
        strict=True,
    )
    for ours, theirs in pairs:
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert metrics_without_timings(tmp_path) == metrics_without_timings(
        unbroken
    )
