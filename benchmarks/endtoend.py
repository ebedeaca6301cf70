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


# The series one after the other, and side by side (the default).
CONTENDERS = {"jobs_1": ["--jobs", "1"], "default": []}


def run_once(flags: list[str]) -> dict[str, Any]:
    """One run of RUN.py with `flags`, in a new working directory.

    A new directory each time: in an old one RUN.py resumes from the
    checkpoints it finds instead of training.
    """
    command = [sys.executable, str(ROOT / "RUN.py"), *flags]
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
        # The largest child so far, of any contender; on Linux ru_maxrss
        # is in KiB.
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "wall_seconds": seconds,
        "peak_rss_mib": peak_kib / 1024,
        "train_seconds": train_seconds,
    }


def benchmark_run(repeats: int) -> dict[str, Any]:
    """Both contenders, alternating, `repeats` times each."""
    runs = {name: [] for name in CONTENDERS}
    for i in range(repeats):
        for name, flags in CONTENDERS.items():
            log.info("run: RUN.py %s, %d of %d", name, i + 1, repeats)
            runs[name].append(run_once(flags))
    walls = {
        name: [run["wall_seconds"] for run in done]
        for name, done in runs.items()
    }
    return {
        "command": "python RUN.py (defaults: sine and linear)",
        "contenders": {
            name: {
                "flags": CONTENDERS[name],
                "wall_seconds": timing.summarize(walls[name]),
                "peak_rss_mib": timing.summarize(
                    [run["peak_rss_mib"] for run in done]
                ),
                "runs": done,
            }
            for name, done in runs.items()
        },
        "speedup_over_jobs_1": timing.paired_ratios(
            walls["jobs_1"], walls["default"]
        ),
    }


def print_run(result: dict[str, Any]) -> None:
    rows = []
    for contender in result["contenders"].values():
        trained = contender["runs"][-1]["train_seconds"]
        rows.append(
            [
                " ".join(["RUN.py", *contender["flags"]]),
                report.with_range(contender["wall_seconds"]),
                report.with_range(contender["peak_rss_mib"]),
                ", ".join(f"{k} {v:.1f}" for k, v in trained.items()),
            ]
        )
    speedup = result["speedup_over_jobs_1"]
    report.print_table(
        f"{result['command']}, median [min-max]; the default is "
        f"{speedup['median_ratio']:.2f}x as fast as --jobs 1 "
        f"(rounds {speedup['round_min']:.2f}-{speedup['round_max']:.2f})",
        ["command", "wall s", "peak RSS MiB", "train s (last run)"],
        rows,
    )
