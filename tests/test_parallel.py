"""Data-parallel training on forced CPU devices matches one device."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What the scripts below share: a small model and sine batches of 16 on a
# mesh of `devices`. They run in subprocesses: the device count is fixed
# when JAX starts.
SETUP = """
import json, re, sys
import jax, jax.numpy as jnp
sys.path.insert(0, ".")
import parallel
from config import Config
from Dataloader import WindowDataset, load_dataset, make_loader
from Initializers import create_model
from TrainTest import (
    loss_and_grads, make_checkpoint_manager, save_checkpoint, train_step
)

def setup(devices, teacher_forcing="always"):
    mesh = parallel.make_mesh(devices)
    config = Config(
        hidden=8, in_len=8, out_len=4, batch_size=16,
        teacher_forcing=teacher_forcing,
    )
    windows = WindowDataset(load_dataset("sine").train, 8, 4)
    loader = make_loader(
        windows, 16, train=True, sharding=parallel.batch_sharding(mesh)
    )
    model = create_model(config, jax.random.PRNGKey(0), 100, 1e-3)
    return mesh, loader, parallel.replicate(model, mesh)
"""

# Trains 8 steps on a mesh of `devices` and prints the losses; optionally
# saves a checkpoint.
TRAIN = SETUP + textwrap.dedent(
    """
    devices, checkpoint = int(sys.argv[1]), sys.argv[2]
    mesh, loader, model = setup(devices)
    key, losses = jax.random.PRNGKey(1), []
    for step, batch in zip(range(8), loader):
        model, metrics = train_step(
            model, batch, key, jnp.float32(1.0), mesh=mesh
        )
        losses.append(float(metrics["loss"]))
    shards = len(batch["context"].sharding.device_set)
    if checkpoint:
        manager = make_checkpoint_manager(checkpoint)
        meta = {"val_mse": 0.0, "total_steps": 100}
        save_checkpoint(manager, 1, model, norm={"std_floor": 1e-3}, meta=meta)
        manager.close()
    print(json.dumps({"losses": losses, "shards": shards,
                      "head": model.decoder.params["head"]["bias"].tolist()}))
    """
)

RESTORE = textwrap.dedent(
    """
    import json, sys
    import jax
    sys.path.insert(0, ".")
    from TrainTest import open_checkpoints, restore_checkpoint

    manager = open_checkpoints(sys.argv[1])
    model, _ = restore_checkpoint(manager, "latest")
    bias = model.decoder.params["head"]["bias"]
    print(json.dumps({"head": bias.tolist(), "devices": jax.device_count()}))
    """
)


# The gradients of one batch whose last 4 windows are masked out, on one
# device and split over two (the first device holds 8 real windows, the
# second 4), and their largest difference; half the decoder's steps are
# fed its own predictions.
GRADIENTS = SETUP + textwrap.dedent(
    """
    mesh, loader, model = setup(2, teacher_forcing="linear")
    batch = next(iter(loader))
    batch["mask"] = jax.device_put(
        jnp.arange(16) < 12, parallel.batch_sharding(mesh)
    ).astype(jnp.float32)
    step = jax.jit(loss_and_grads, static_argnames="mesh")
    key, ratio = jax.random.PRNGKey(1), jnp.float32(0.5)
    one = jax.device_put((model, batch), jax.devices()[0])
    loss, grads = step(*one, key, ratio)
    split_loss, split_grads = step(model, batch, key, ratio, mesh=mesh)
    split_grads = jax.device_put(split_grads, jax.devices()[0])
    differences = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))), grads, split_grads
    )
    print(json.dumps({
        "loss": [float(loss), float(split_loss)],
        "largest_gradient": max(
            float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)
        ),
        "difference": max(jax.tree.leaves(differences)),
    }))
    """
)

# Compiles the train step on a mesh of two devices and prints the names of
# the computations of its optimized HLO that sum across devices.
COLLECTIVES = SETUP + textwrap.dedent(
    """
    mesh, loader, model = setup(2)
    args = (model, next(iter(loader)), jax.random.PRNGKey(1), 1.0)
    hlo = train_step.lower(*args, mesh=mesh).compile().as_text()
    computations = re.split(r"\\n(?=\\S)", hlo)
    print(json.dumps([
        " ".join(c.split()[:2])
        for c in computations if re.search(r"all-reduce(-start)?\\(", c)
    ]))
    """
)


def python(script: str, *args: str, devices: int | None = None) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def four(tmp_path_factory) -> tuple[dict, Path]:
    checkpoint = tmp_path_factory.mktemp("four") / "checkpoints"
    return python(TRAIN, "4", str(checkpoint), devices=4), checkpoint


def test_four_devices_split_each_batch(four):
    result, _ = four
    assert result["shards"] == 4


def test_four_devices_train_as_one_does(four):
    result, _ = four
    one = python(TRAIN, "1", "", devices=4)
    assert one["shards"] == 1
    for ours, theirs in zip(result["losses"], one["losses"], strict=True):
        assert ours == pytest.approx(theirs, abs=1e-5, rel=1e-5)


def test_a_four_device_checkpoint_restores_on_one_device(four):
    result, checkpoint = four
    restored = python(RESTORE, str(checkpoint))
    assert restored["devices"] == 1
    assert restored["head"] == result["head"]


def test_split_gradients_are_those_of_one_device_with_rows_masked_out():
    result = python(GRADIENTS, devices=2)
    assert result["loss"][1] == pytest.approx(result["loss"][0], rel=1e-5)
    assert result["difference"] <= 1e-5 * result["largest_gradient"]


def test_devices_sum_their_gradients_once_a_step_not_once_a_time_step():
    summing = python(COLLECTIVES, devices=2)
    assert summing, "no all-reduce: the batch was not split"
    assert all(name.startswith("ENTRY") for name in summing), summing
