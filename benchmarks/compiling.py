"""Seconds to lower and compile the train step and the generators afresh."""

import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import report, timing, workloads
from benchmarks.generation import StepwiseGenerator
from TrainTest import generate, train_step

log = logging.getLogger(__name__)

ENCODERS = ("uni", "bi")

Phases = tuple[float, float]  # seconds to lower, seconds to compile


def fresh_jit(fn: Callable, **options: Any):
    """A new jit of the Python function under `fn`, with no caches to hit."""
    jax.clear_caches()
    return jax.jit(getattr(fn, "__wrapped__", fn), **options)


def time_phases(jitted, *args: Any) -> Phases:
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lowered_at = time.perf_counter()
    lowered.compile()
    return lowered_at - start, time.perf_counter() - lowered_at


def compilers(work: workloads.Workload) -> dict[str, timing.Measure]:
    """Each jitted function, as a call that lowers and compiles it afresh.

    The arguments are made once: after `jax.clear_caches` even making a
    model compiles again, and only the functions' own compiling counts.
    """
    model = workloads.create_jax_model(work)
    batch = workloads.training_batches(work)[0][0]
    key, ratio = jax.random.PRNGKey(0), jnp.float32(1.0)
    context = jnp.zeros((work.config.batch_size, work.config.in_len))
    horizon = work.config.out_len
    params = model.params
    shapes = jax.eval_shape(StepwiseGenerator(model).start, params, context)

    def train() -> Phases:
        return time_phases(fresh_jit(train_step), model, batch, key, ratio)

    def scan() -> Phases:
        jitted = fresh_jit(generate, static_argnums=2)
        return time_phases(jitted, model, context, horizon)

    def loop() -> Phases:
        # Its three jitted functions, summed.
        carries, previous, mean, std = shapes
        jax.clear_caches()
        generator = StepwiseGenerator(model)
        phases = [
            time_phases(generator.start, params, context),
            time_phases(generator.step, params, carries, previous),
            time_phases(generator.finish, [previous] * horizon, mean, std),
        ]
        return sum(p[0] for p in phases), sum(p[1] for p in phases)

    return {"train_step": train, "generate_scan": scan, "generate_loop": loop}


def benchmark_compiling(repeats: int) -> list[dict[str, Any]]:
    """Lowering and compiling seconds of each jitted function, by encoder.

    Every measurement starts from cleared caches; the functions are
    interleaved within each round.
    """
    rows = []
    for encoder in ENCODERS:
        log.info("compile: %s", encoder)
        work = workloads.load_workload(workloads.make_config(32, 64, encoder))
        samples = timing.interleave(compilers(work), repeats)
        rows += [
            {
                "function": name,
                "encoder": encoder,
                "batch": work.config.batch_size,
                "hidden": work.config.hidden,
                "lower_seconds": timing.summarize([p[0] for p in phases]),
                "compile_seconds": timing.summarize([p[1] for p in phases]),
                "total_seconds": timing.summarize([sum(p) for p in phases]),
            }
            for name, phases in samples.items()
        ]
    return rows


def print_compiling(rows: list[dict[str, Any]]) -> None:
    table = [
        [
            row["function"],
            row["encoder"],
            report.with_range(row["lower_seconds"]),
            report.with_range(row["compile_seconds"]),
            report.with_range(row["total_seconds"]),
        ]
        for row in rows
    ]
    report.print_table(
        "Compile time, seconds: median [min-max], batch 32, hidden 64",
        ["function", "encoder", "lower", "compile", "total"],
        table,
    )
