"""Writes the toy sine and linear series as t,y CSV files."""

from pathlib import Path

import numpy as np

STEP = 0.25  # time between samples
TRAIN_SAMPLES = 960  # t = 0 .. 239.75
TEST_SAMPLES = 240  # t = 240 .. 299.75


def make_times(first: int, count: int) -> np.ndarray:
    # k * STEP from integer k is exact, where a running sum would drift.
    return np.arange(first, first + count) * STEP


def make_linear(t: np.ndarray) -> np.ndarray:
    return 0.5 * t


def make_sine(t: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * 0.1 * t)


def write_csv(path: Path, t: np.ndarray, y: np.ndarray) -> None:
    # repr of a Python float is the shortest string that reads back the
    # same number, so a rewrite is byte-identical.
    rows = [f"{float(a)!r},{float(b)!r}\n" for a, b in zip(t, y, strict=True)]
    with open(path, "w", newline="\n") as f:
        f.write("t,y\n")
        f.writelines(rows)


def write_toy_data(out_dir: Path) -> list[Path]:
    """Writes {sine,linear}_{train,test}.csv into out_dir; returns the paths."""
    out_dir = Path(out_dir)
    splits = {
        "train": make_times(0, TRAIN_SAMPLES),
        "test": make_times(TRAIN_SAMPLES, TEST_SAMPLES),
    }
    paths = []
    for name, make_y in (("sine", make_sine), ("linear", make_linear)):
        for split, t in splits.items():
            path = out_dir / f"{name}_{split}.csv"
            write_csv(path, t, make_y(t))
            paths.append(path)
    return paths


def main() -> None:
    for path in write_toy_data(Path(__file__).parent):
        print(path)


if __name__ == "__main__":
    main()
