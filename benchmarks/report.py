"""The machine a benchmark ran on, its tables, and its JSON file."""

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jax", "jaxlib", "flax", "optax", "torch", "numpy")
# Vector units that set the matmul yardstick; virtual CPUs often hide the
# model's name behind a generic one.
SIMD = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


def read_cpuinfo() -> tuple[str, list[str]]:
    """The CPU's model name and which of `SIMD` it has."""
    model, flags = platform.processor() or "unknown", []
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return model, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = [f for f in SIMD if f in value.split()]
            break
    return model, flags


def git_revision() -> dict[str, Any]:
    """The commit measured, and whether tracked files differed from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "modified": git(
            "status", "--porcelain", "--untracked-files=no"
        ).splitlines(),
    }


def describe_machine(torch_threads: int) -> dict[str, Any]:
    """CPU, cores, load and library versions, for the JSON file."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    model, simd = read_cpuinfo()
    return {
        "cpu": model,
        "simd": simd,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "torch_default_threads": torch_threads,
        "date": datetime.datetime.now().astimezone().isoformat(),
        "git": git_revision(),
    }


def short(value: float) -> str:
    """Three significant digits with a k, M or G suffix: 12.3k."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def with_range(stats: dict[str, Any], repeats: int | None = None) -> str:
    """A summary as `median [min-max]`, and its count if under `repeats`."""
    low, high = short(stats["min"]), short(stats["max"])
    text = f"{short(stats['median'])} [{low}-{high}]"
    if repeats is not None and stats["n"] < repeats:
        text += f" n={stats['n']}"
    return text


def print_table(title: str, header: list[str], rows: list[list[str]]):
    """The program's answer: a right-aligned table under its title."""
    lines = [header, *rows]
    widths = [max(len(line[k]) for line in lines) for k in range(len(header))]
    print(f"\n{title}")
    for line in lines:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
