"""Achieved GFLOP/s of a train step, beside a large float32 matmul."""

import logging
import math
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import report, timing, workloads
from benchmarks.training import JaxTraining
from config import Config
from TrainTest import train_step

log = logging.getLogger(__name__)

BATCH = 512
MATMUL_SIZE = 2048


def count_matmul_flops(jaxpr) -> int:
    """FLOPs of every dot_general in a jaxpr, scan bodies times their length.

    Elementwise work (the gates' sigmoids and tanhs, Adam) is left out: it
    is a few percent of the matmuls here. A while loop's body counts once,
    as its trip count is not known; the model has none.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # a ClosedJaxpr's inner one
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "cond":
            total += max(count_matmul_flops(b) for b in eqn.params["branches"])
        else:
            inner = sum(
                count_matmul_flops(value)
                for value in _jaxprs_in(eqn.params.values())
            )
            total += inner * (eqn.params["length"] if name == "scan" else 1)
    return total


def _jaxprs_in(values):
    for value in values:
        if hasattr(value, "eqns") or hasattr(
            getattr(value, "jaxpr", None), "eqns"
        ):
            yield value
        elif isinstance(value, tuple | list):
            yield from _jaxprs_in(value)


def _dot_flops(eqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    kept = [
        size
        for axis, size in enumerate(rhs)
        if axis not in rhs_contract and axis not in rhs_batch
    ]
    return 2 * math.prod(lhs) * math.prod(kept)


def analytic_train_flops(config: Config) -> int:
    """3x the forward matmuls: the backward pass does about twice the work.

    Each LSTM step multiplies [batch, in + hidden] by [in + hidden,
    4 * hidden]; the input is one value wide.
    """

    def lstm(hidden: int, steps: int) -> int:
        return 2 * config.batch_size * (1 + hidden) * 4 * hidden * steps

    directions = 2 if config.encoder == "bi" else 1
    encoder = directions * lstm(config.hidden, config.in_len)
    decoder = lstm(config.decoder_hidden, config.out_len)
    head = 2 * config.batch_size * config.decoder_hidden * config.out_len
    return 3 * (encoder + decoder + head)


def xla_flops(compiled) -> float | None:
    """XLA's own estimate; it counts a loop's body once, not per trip."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # not every backend or version offers it
        return None
    if isinstance(analysis, list):
        analysis = analysis[0] if analysis else {}
    return (analysis or {}).get("flops")


class Matmul:
    """A jitted float32 [n, n] @ [n, n], the yardstick of what XLA can do."""

    def __init__(self, size: int):
        keys = jax.random.split(jax.random.PRNGKey(0))
        self.a, self.b = (jax.random.normal(k, (size, size)) for k in keys)
        self.dot = jax.jit(jnp.dot)
        self.flops = 2 * size**3

    def __call__(self, calls: int) -> None:
        for _ in range(calls):
            out = self.dot(self.a, self.b)
        out.block_until_ready()


def count_train_flops(work: workloads.Workload, runner: JaxTraining):
    """The step's matmul FLOPs, counted in the jaxpr of the same step with
    XLA's scan: the fused LSTM kernel does the same matmuls inside one
    custom call, which a jaxpr does not look into."""
    args = (runner.model, runner.batches[0], runner.key, runner.ratio)
    compiled = jax.jit(train_step).lower(*args).compile()
    scan = workloads.create_jax_model(workloads.with_kernel(work, "scan"))
    scan_args = (scan, *args[1:])
    return {
        "jaxpr_matmul": count_matmul_flops(
            jax.make_jaxpr(train_step)(*scan_args)
        ),
        "analytic": analytic_train_flops(work.config),
        "xla_cost_analysis": xla_flops(compiled),
    }


def benchmark_flops(
    hiddens: tuple[int, ...], repeats: int, target_seconds: float
) -> dict[str, Any]:
    """GFLOP/s of train steps at batch 512, interleaved with the matmul."""
    runs, counts = {}, {}
    for hidden in hiddens:
        work = workloads.load_workload(
            workloads.make_config(BATCH, hidden, "uni")
        )
        batches = workloads.training_batches(work)[0]
        name = f"train_h{hidden}"
        runs[name] = JaxTraining(workloads.create_jax_model(work), batches)
        counts[name] = count_train_flops(work, runs[name])
    matmul = Matmul(MATMUL_SIZE)
    runs["matmul"] = matmul
    counts["matmul"] = {"jaxpr_matmul": matmul.flops}
    log.info("flops: %s", ", ".join(runs))

    stats = timing.measure_rates(runs, 1.0, repeats, target_seconds)
    peak = stats["matmul"]["median"] * matmul.flops / 1e9
    rows = []
    for name, rate in stats.items():
        flops = counts[name]["jaxpr_matmul"]
        gflops = rate["median"] * flops / 1e9
        rows.append(
            {
                "name": name,
                "flops": counts[name],
                "seconds_per_call": 1 / rate["median"],
                "calls_per_second": rate,
                "gflop_per_second": gflops,
                "percent_of_matmul": 100 * gflops / peak,
            }
        )
    return {"batch": BATCH, "matmul_size": MATMUL_SIZE, "rows": rows}


def print_flops(result: dict[str, Any]) -> None:
    table = []
    for row in result["rows"]:
        counts = row["flops"]
        xla = counts.get("xla_cost_analysis")
        table.append(
            [
                row["name"],
                report.short(counts["jaxpr_matmul"]),
                report.short(counts.get("analytic", counts["jaxpr_matmul"])),
                report.short(xla) if xla else "-",
                f"{row['seconds_per_call']:.3g}",
                f"{row['gflop_per_second']:.3g}",
                f"{row['percent_of_matmul']:.0f}%",
            ]
        )
    report.print_table(
        f"Achieved GFLOP/s, train steps at batch {result['batch']}, uni, "
        f"against a {result['matmul_size']}^2 float32 matmul (medians)",
        ["", "FLOPs", "analytic", "XLA est.", "s/call", "GFLOP/s", "of mm"],
        table,
    )
