"""Repeated, interleaved timing of contenders, summarized by medians."""

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

Run = Callable[[int], Any]  # does n units of work and waits for them
Measure = Callable[[], Any]  # one measurement

SLOW = 4  # times its planned time that a contender may take, in all


def time_run(run: Run, units: int) -> float:
    """Wall-clock seconds of `run(units)`."""
    start = time.perf_counter()
    run(units)
    return time.perf_counter() - start


def calibrate(run: Run, target_seconds: float) -> int:
    """Units per measurement so that one lasts about `target_seconds`.

    The first call compiles and allocates, so it is not timed. Units grow
    by fours until a call lasts a quarter of the target: a single call of
    a fast step is too short to time reliably.
    """
    run(1)
    units = 1
    while True:
        seconds = time_run(run, units)
        if seconds >= target_seconds / 4:
            break
        units *= 4
    return max(1, round(units * target_seconds / seconds))


def interleave(
    contenders: dict[str, Measure],
    repeats: int,
    budget_seconds: float = math.inf,
) -> dict[str, list[Any]]:
    """Measures each contender once per round, in turn: A, B, A, B, ...

    On a shared machine the load drifts; interleaved, every contender
    sees the same drift instead of one of them getting a quiet minute.
    A contender whose measurements have taken more than `budget_seconds`
    in all sits out the later rounds, so it has fewer samples: on a busy
    machine a multithreaded torch step can slow down a hundredfold.
    """
    samples = {name: [] for name in contenders}
    spent = dict.fromkeys(contenders, 0.0)
    for _ in range(repeats):
        for name, measure in contenders.items():
            if spent[name] > budget_seconds:
                continue
            start = time.perf_counter()
            samples[name].append(measure())
            spent[name] += time.perf_counter() - start
    return samples


def summarize(samples: list[float]) -> dict[str, Any]:
    """Median, range and quartiles of repeated measurements."""
    values = np.asarray(samples, np.float64)
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "median": float(median),
        "min": float(values.min()),
        "max": float(values.max()),
        "q1": float(q1),
        "q3": float(q3),
        "n": len(values),
        "samples": values.tolist(),
    }


def measure_rates(
    runs: dict[str, Run],
    items_per_unit: float,
    repeats: int,
    target_seconds: float,
) -> dict[str, dict[str, Any]]:
    """Items per second of each run, calibrated, then timed interleaved.

    Returns each run's summary (see `summarize`) and `units`, the units of
    work in one measurement. A run that takes over `SLOW` times its
    planned time sits out the later rounds (see `interleave`).
    """
    units = {name: calibrate(run, target_seconds) for name, run in runs.items()}

    def measure(name: str) -> Measure:
        def rate() -> float:
            seconds = time_run(runs[name], units[name])
            return units[name] * items_per_unit / seconds

        return rate

    samples = interleave(
        {name: measure(name) for name in runs},
        repeats,
        budget_seconds=SLOW * repeats * target_seconds,
    )
    return {
        name: {**summarize(samples[name]), "units": units[name]}
        for name in runs
    }


def paired_ratios(numerator: list[float], denominator: list[float]) -> dict:
    """The ratio of two contenders' medians, and its spread over rounds.

    Samples of one round were taken side by side, so their ratio is less
    disturbed by the machine's load than either sample.
    """
    both = min(len(numerator), len(denominator))
    rounds = np.asarray(numerator[:both]) / np.asarray(denominator[:both])
    return {
        "median_ratio": float(np.median(numerator) / np.median(denominator)),
        "round_min": float(rounds.min()),
        "round_max": float(rounds.max()),
    }
