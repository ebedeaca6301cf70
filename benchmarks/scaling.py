"""Data-parallel training on 1, 2 and 4 forced CPU devices."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
DEVICES = (1, 2, 4)

# Times train steps on a mesh of N devices; prints seconds per step, one
# per round. A subprocess: JAX fixes its device count when it starts.
STEPS = textwrap.dedent(
    """
    import json, sys, time
    import jax, jax.numpy as jnp
    import parallel
    from config import Config
    from Dataloader import WindowDataset, load_dataset, make_loader
    from Initializers import create_model
    from TrainTest import train_step

    batch, rounds = int(sys.argv[1]), int(sys.argv[2])
    mesh = parallel.make_mesh()
    windows = WindowDataset(load_dataset("sine").train, 40, 20)
    loader = make_loader(
        windows, batch, train=True, sharding=parallel.batch_sharding(mesh)
    )
    batches = list(loader)
    model = create_model(
        Config(batch_size=batch), jax.random.PRNGKey(0), 1000, 1e-3
    )
    model = parallel.replicate(model, mesh)
    key, ratio = jax.random.PRNGKey(1), jnp.float32(1.0)
    model, _ = train_step(model, batches[0], key, ratio, mesh=mesh)
    jax.block_until_ready(model)
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        for b in batches:
            model, _ = train_step(model, b, key, ratio, mesh=mesh)
        jax.block_until_ready(model)
        seconds.append((time.perf_counter() - start) / len(batches))
    print(json.dumps(seconds))
    """
)


def time_steps(devices: int, batch: int, rounds: int) -> list[float]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    result = subprocess.run(
        [sys.executable, "-c", STEPS, str(batch), str(rounds)],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def benchmark_scaling(batch: int, repeats: int) -> list[dict[str, Any]]:
    """Samples per second, and per device, at each device count.

    Device counts take turns, a round each, so drifting load falls on all.
    """
    seconds = {n: [] for n in DEVICES}
    for _ in range(repeats):
        for n in DEVICES:
            seconds[n].append(float(np.median(time_steps(n, batch, 3))))
    rows = []
    for n in DEVICES:
        step = float(np.median(seconds[n]))
        rows.append(
            {
                "devices": n,
                "batch": batch,
                "step_seconds": step,
                "samples_per_second": batch / step,
                "samples_per_second_per_device": batch / step / n,
                "samples": seconds[n],
            }
        )
    return rows


def print_scaling(rows: list[dict[str, Any]]) -> None:
    report.print_table(
        "Data-parallel training on forced CPU devices (they share the "
        "machine's cores), each device count in a process of its own",
        ["devices", "batch", "ms/step", "samples/s", "per device"],
        [
            [
                str(r["devices"]),
                str(r["batch"]),
                f"{1e3 * r['step_seconds']:.1f}",
                report.short(r["samples_per_second"]),
                report.short(r["samples_per_second_per_device"]),
            ]
            for r in rows
        ],
    )
