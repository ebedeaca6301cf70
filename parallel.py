"""Data parallelism: one mesh over the batch axis of the devices."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from config import InputError


def make_mesh(devices: int = 0) -> Mesh:
    """A one-axis mesh, "batch", over the first `devices` devices (0: all).

    In a multi-host run (after `jax.distributed.initialize`), "all" spans
    every host's devices.
    """
    available = jax.devices()
    if devices > len(available):
        raise InputError(
            f"--devices: {devices} asked for, {len(available)} available"
        )
    return Mesh(np.array(available[: devices or None]), ("batch",))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Splits the leading (batch) axis of every array across the mesh."""
    return NamedSharding(mesh, PartitionSpec("batch"))


def replicate(tree, mesh: Mesh):
    """Places a copy of every array of `tree` on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise InputError(
            f"--batch-size: {batch_size} does not split evenly over "
            f"{mesh.size} devices"
        )
