"""Training throughput of the JAX model against the PyTorch twin."""

import itertools
import logging
from typing import Any

import jax
import jax.numpy as jnp
import torch
from jax.sharding import Mesh

import parallel
from benchmarks import report, timing, workloads
from pytorch.TrainTest import Trainer
from pytorch.TrainTest import train_step as torch_train_step
from TrainTest import train_step

log = logging.getLogger(__name__)

ENCODERS = ("uni", "bi")


class JaxTraining:
    """`TrainTest.train_step` over one epoch's batches, cycled.

    With a `mesh`, each batch is split over its devices.
    """

    def __init__(
        self, model, batches: list, seed: int = 0, mesh: Mesh | None = None
    ):
        if mesh is not None:
            model = parallel.replicate(model, mesh)
            batches = jax.device_put(batches, parallel.batch_sharding(mesh))
        self.model = model
        self.batches = batches
        self.mesh = mesh
        self.key = jax.random.PRNGKey(seed)
        # Teacher forcing, RUN.py's default; an array, as train_epoch passes.
        self.ratio = jnp.float32(1.0)
        self.steps = 0

    def __call__(self, steps: int) -> None:
        model = self.model
        for _ in range(steps):
            batch = self.batches[self.steps % len(self.batches)]
            model, metrics = train_step(
                model, batch, self.key, self.ratio, mesh=self.mesh
            )
            self.steps += 1
        jax.block_until_ready((model, metrics))
        self.model = model


class TorchTraining:
    """The twin's `train_step` over the same batches, on `threads` threads."""

    def __init__(self, trainer: Trainer, batches: list, threads: int):
        self.trainer = trainer
        self.batches = batches
        self.threads = threads
        self.steps = 0

    def __call__(self, steps: int) -> None:
        torch.set_num_threads(self.threads)
        for _ in range(steps):
            batch = self.batches[self.steps % len(self.batches)]
            # Returns loss.item(), so the step has finished on return.
            torch_train_step(self.trainer, batch, 1.0)
            self.steps += 1


def split_contender_name() -> str | None:
    """The name of the JAX step split over all devices, if there are two
    or more (`python -m benchmarks` makes one per core)."""
    devices = jax.device_count()
    return f"jax_{devices}dev" if devices > 1 else None


def training_runs(work: workloads.Workload) -> dict[str, timing.Run]:
    """The JAX step on one device and over all, the same step with XLA's
    scan in place of the fused LSTM kernel, and the twin's."""
    jax_batches, torch_batches = workloads.training_batches(work)
    runs = {"jax": JaxTraining(workloads.create_jax_model(work), jax_batches)}
    scan = workloads.with_kernel(work, "scan")
    runs["jax_scan"] = JaxTraining(
        workloads.create_jax_model(scan), jax_batches
    )
    split = split_contender_name()
    if split and work.config.batch_size % jax.device_count():
        log.info("%s: batch does not split over the devices", split)
    elif split:
        runs[split] = JaxTraining(
            workloads.create_jax_model(work),
            jax_batches,
            mesh=parallel.make_mesh(),
        )
    for threads in workloads.torch_thread_counts():
        trainer = workloads.create_torch_trainer(work)
        runs[workloads.torch_name(threads)] = TorchTraining(
            trainer, torch_batches, threads
        )
    return runs


def benchmark_training(
    batches: tuple[int, ...],
    hiddens: tuple[int, ...],
    repeats: int,
    target_seconds: float,
) -> list[dict[str, Any]]:
    """Samples per second of a train step, JAX and twin, over the grid."""
    rows = []
    split = split_contender_name()
    for batch, hidden, encoder in itertools.product(batches, hiddens, ENCODERS):
        log.info("train: batch %s, hidden %s, %s", batch, hidden, encoder)
        work = workloads.load_workload(
            workloads.make_config(batch, hidden, encoder)
        )
        stats = timing.measure_rates(
            training_runs(work), batch, repeats, target_seconds
        )
        rows.append(
            {
                "batch": batch,
                "hidden": hidden,
                "encoder": encoder,
                "samples_per_second": stats,
                **compare_to_torch(stats, "jax"),
                **compare_to_torch(stats, "jax_scan"),
                "jax_over_jax_scan": timing.paired_ratios(
                    stats["jax"]["samples"], stats["jax_scan"]["samples"]
                ),
                **(
                    compare_to_torch(stats, split)
                    if split and split in stats
                    else {}
                ),
            }
        )
    return rows


def compare_to_torch(stats: dict[str, dict], name: str) -> dict[str, Any]:
    """`name`'s rate over the faster torch thread count's, by medians."""
    twins = [n for n in stats if n.startswith("torch_")]
    best = max(twins, key=lambda n: stats[n]["median"])
    ratio = timing.paired_ratios(stats[name]["samples"], stats[best]["samples"])
    return {"torch_best": best, f"{name}_over_torch": ratio}


def print_training(rows: list[dict[str, Any]]) -> None:
    names = list(
        dict.fromkeys(n for r in rows for n in r["samples_per_second"])
    )
    jax_names = [n for n in names if n.startswith("jax")]
    header = ["batch", "hidden", "encoder"]
    header += [f"{name} samples/s" for name in names]
    header += [f"{name}/torch" for name in jax_names] + ["jax/jax_scan"]
    table = []
    for row in rows:
        stats = row["samples_per_second"]
        rounds = max(s["n"] for s in stats.values())
        table.append(
            [str(row["batch"]), str(row["hidden"]), row["encoder"]]
            + [
                report.with_range(stats[name], rounds) if name in stats else "-"
                for name in names
            ]
            + [
                f"{row[f'{name}_over_torch']['median_ratio']:.2f}"
                if f"{name}_over_torch" in row
                else "-"
                for name in jax_names
            ]
            + [f"{row['jax_over_jax_scan']['median_ratio']:.2f}"]
        )
    report.print_table(
        "Training throughput, samples/s: median [min-max]; jax is one "
        "device, jax_Ndev each batch split over N (one per core), jax_scan "
        "one device with XLA's scan for the fused LSTM kernel; x/torch is "
        "x over the faster torch thread count",
        header,
        table,
    )
