"""Forecasting throughput over the sine test windows: four generators."""

import itertools
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import report, timing, workloads
from Initializers import Seq2Seq
from modelBlocks import denormalize, normalize
from pytorch.convert import load_jax_model
from pytorch.TrainTest import forecast_windows as torch_forecast_windows
from TrainTest import forecast_windows

log = logging.getLogger(__name__)

ENCODERS = ("uni", "bi")
AGREEMENT = 1e-3  # float32 forecasts of sine values within [-1, 1]

Forecast = Callable[[], np.ndarray]


def ratio_pairs(torch_best: str) -> list[tuple[str, str, str]]:
    """(contender, short name of the other, the other) of each ratio."""
    return [
        ("jax", "torch", torch_best),
        ("jax", "loop", "jax_loop"),
        ("jax_scan", "torch", torch_best),
        ("jax_scan", "loop", "jax_loop"),
    ]


class StepwiseGenerator:
    """Free-running forecasts from a Python loop over a jitted decoder step.

    The alternative to one `lax.scan`: the encoder, each decoder step and
    the final rescaling are separate jitted calls. It makes a single
    chunk, so the horizon is at most `out_len`.
    """

    def __init__(self, model: Seq2Seq):
        self.model = model

        def start(params, context):
            # The model's own per-window normalization, as in `generate`.
            current = model.with_params(params)
            window, mean, std = normalize(context, model.std_floor)
            return current.encode(window), window[:, -1], mean, std

        def step(params, carries, previous):
            return model.with_params(params).decode_step(carries, previous)

        def finish(values, mean, std):
            return denormalize(jnp.stack(values, axis=1), mean, std)

        self.start = jax.jit(start)
        self.step = jax.jit(step)
        self.finish = jax.jit(finish)

    def __call__(self, context: jax.Array, horizon: int) -> jax.Array:
        """Forecasts [batch, horizon] after context [batch, in_len]."""
        if not 1 <= horizon <= self.model.config.out_len:
            raise ValueError(f"horizon {horizon} is not in 1..out_len")
        params = self.model.params
        carries, previous, mean, std = self.start(params, context)
        values = []
        for _ in range(horizon):
            carries, previous = self.step(params, carries, previous)
            values.append(previous)
        return self.finish(values, mean, std)


def forecast_stepwise(
    generator: StepwiseGenerator,
    contexts: np.ndarray,
    horizon: int,
    batch_size: int,
) -> np.ndarray:
    """As `TrainTest.forecast_windows`, with the stepwise generator."""
    outputs = []
    for start in range(0, len(contexts), batch_size):
        batch = contexts[start : start + batch_size]
        pad = np.repeat(batch[-1:], batch_size - len(batch), axis=0)
        padded = jnp.asarray(np.concatenate([batch, pad]), jnp.float32)
        outputs.append(np.asarray(generator(padded, horizon))[: len(batch)])
    return np.concatenate(outputs)


def repeat(forecast: Forecast, threads: int | None = None) -> timing.Run:
    """A run whose unit is one forecast of every test window."""

    def run(passes: int) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        for _ in range(passes):
            forecast()

    return run


def generation_forecasts(
    work: workloads.Workload, batch_size: int
) -> dict[str, Callable[[], np.ndarray]]:
    """Each contender as a call that forecasts every test window.

    `jax` is the model's own generator, `jax_scan` the same with XLA's
    scan in place of the fused LSTM kernel, both with the same weights.
    """
    model = workloads.create_jax_model(work)
    scan = workloads.create_jax_model(workloads.with_kernel(work, "scan"))
    scan = scan.with_params(model.params)
    twin = load_jax_model(model)
    stepwise = StepwiseGenerator(model)
    contexts = workloads.window_contexts(work)
    horizon = work.config.out_len
    return {
        "jax": lambda: forecast_windows(model, contexts, horizon, batch_size),
        "jax_scan": lambda: forecast_windows(
            scan, contexts, horizon, batch_size
        ),
        "jax_loop": lambda: forecast_stepwise(
            stepwise, contexts, horizon, batch_size
        ),
        "torch": lambda: torch_forecast_windows(
            twin, contexts, horizon, batch_size
        ),
    }


def check_agreement(forecasts: dict[str, Forecast]) -> dict[str, float]:
    """Largest difference of each generator from `jax`, same weights."""
    reference = forecasts["jax"]()
    differences = {
        name: float(np.max(np.abs(forecast() - reference)))
        for name, forecast in forecasts.items()
        if name != "jax"
    }
    for name, difference in differences.items():
        if not difference <= AGREEMENT:
            log.warning("%s differs from jax by %.3g", name, difference)
    return differences


def benchmark_generation(
    batch_sizes: tuple[int, ...],
    hiddens: tuple[int, ...],
    repeats: int,
    target_seconds: float,
) -> list[dict[str, Any]]:
    """Test windows per second of each generator, over the grid.

    A batch size of 0 puts all the test windows in one batch.
    """
    rows = []
    for batch, hidden, encoder in itertools.product(
        batch_sizes, hiddens, ENCODERS
    ):
        work = workloads.load_workload(
            workloads.make_config(32, hidden, encoder)
        )
        windows = len(work.windows["test"])
        batch = batch or windows
        log.info("generate: batch %s, hidden %s, %s", batch, hidden, encoder)
        forecasts = generation_forecasts(work, batch)
        differences = check_agreement(forecasts)
        runs = {
            name: repeat(forecasts[name])
            for name in ("jax", "jax_scan", "jax_loop")
        }
        for threads in workloads.torch_thread_counts():
            runs[workloads.torch_name(threads)] = repeat(
                forecasts["torch"], threads
            )
        stats = timing.measure_rates(runs, windows, repeats, target_seconds)
        twins = [n for n in stats if n.startswith("torch_")]
        best = max(twins, key=lambda n: stats[n]["median"])
        rows.append(
            {
                "batch": batch,
                "hidden": hidden,
                "encoder": encoder,
                "windows": windows,
                "horizon": work.config.out_len,
                "windows_per_second": stats,
                "max_abs_difference_from_jax": differences,
                "torch_best": best,
                **{
                    f"{name}_over_{other}": timing.paired_ratios(
                        stats[name]["samples"], stats[against]["samples"]
                    )
                    for name, other, against in ratio_pairs(best)
                },
            }
        )
    return rows


def print_generation(rows: list[dict[str, Any]]) -> None:
    names = list(rows[0]["windows_per_second"])
    header = ["batch", "hidden", "encoder"]
    header += [f"{name} windows/s" for name in names]
    ratios = [(name, other) for name, other, _ in ratio_pairs("torch")]
    header += [f"{name}/{other}" for name, other in ratios]
    table = []
    for row in rows:
        stats = row["windows_per_second"]
        rounds = max(s["n"] for s in stats.values())
        table.append(
            [str(row["batch"]), str(row["hidden"]), row["encoder"]]
            + [report.with_range(stats[name], rounds) for name in names]
            + [
                f"{row[f'{name}_over_{other}']['median_ratio']:.2f}"
                for name, other in ratios
            ]
        )
    windows, horizon = rows[0]["windows"], rows[0]["horizon"]
    report.print_table(
        f"Generation of all {windows} test windows, horizon {horizon}, "
        "windows/s: median [min-max]; jax is the model's generator, "
        "jax_scan the same with XLA's scan for the fused LSTM kernel, "
        "jax_loop a Python loop over a jitted step; x/torch is over the "
        "faster torch thread count",
        header,
        table,
    )
