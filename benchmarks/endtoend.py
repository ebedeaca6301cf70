"""`python RUN.py` end to end: wall time and peak memory of the child."""

import json
import logging
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import report, timing

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
PEAK_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def run_once() -> dict[str, Any]:
    """One run of RUN.py with its defaults, in a new working directory.

    A new directory each time: in an old one RUN.py resumes from the
    checkpoints it finds instead of training.
    """
    command = [sys.executable, str(ROOT / "RUN.py")]
    gnu_time = shutil.which("time") or "/usr/bin/time"
    if Path(gnu_time).exists():
        command = [gnu_time, "-v", *command]
    with tempfile.TemporaryDirectory(prefix="bench-run-") as workdir:
        start = time.perf_counter()
        child = subprocess.run(
            command, cwd=workdir, capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        if child.returncode != 0:
            raise RuntimeError(
                f"RUN.py exited with {child.returncode}: "
                f"{child.stderr.strip()[-2000:]}"
            )
        train_seconds = {
            path.parent.name: json.loads(path.read_text())["train_seconds"]
            for path in sorted(Path(workdir).glob("runs/*/metrics.json"))
        }
    found = PEAK_RSS.search(child.stderr)
    if found:
        peak_kib = int(found.group(1))
    else:
        # The largest child so far; on Linux ru_maxrss is in KiB.
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "wall_seconds": seconds,
        "peak_rss_mib": peak_kib / 1024,
        "train_seconds": train_seconds,
    }


def benchmark_run(repeats: int) -> dict[str, Any]:
    runs = []
    for i in range(repeats):
        log.info("run: RUN.py, %d of %d", i + 1, repeats)
        runs.append(run_once())
    return {
        "command": "python RUN.py (defaults: sine and linear)",
        "wall_seconds": timing.summarize([r["wall_seconds"] for r in runs]),
        "peak_rss_mib": timing.summarize([r["peak_rss_mib"] for r in runs]),
        "runs": runs,
    }


def print_run(result: dict[str, Any]) -> None:
    trained = result["runs"][-1]["train_seconds"]
    report.print_table(
        f"{result['command']}, {len(result['runs'])} run(s): median [min-max]",
        ["wall s", "peak RSS MiB", "train s (last run)"],
        [
            [
                report.with_range(result["wall_seconds"]),
                report.with_range(result["peak_rss_mib"]),
                ", ".join(f"{k} {v:.1f}" for k, v in trained.items()),
            ]
        ],
    )
