"""Data parallelism: one mesh over the batch axis of the devices."""

from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from config import InputError

AXIS = "batch"  # the mesh's one axis, over which each batch is split


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
    return Mesh(np.array(available[: devices or None]), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Splits the leading (batch) axis of every array across the mesh."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicate(tree, mesh: Mesh):
    """Places a copy of every array of `tree` on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def sum_over_devices(fn: Callable, mesh: Mesh) -> Callable:
    """`fn(replicated, *rows)` on every device of `mesh`, each over its own
    rows (its part of the leading axis) of the `rows` arguments, the
    outputs summed across the devices.

    Inside `fn`, `jax.lax.axis_index(AXIS)` numbers the device.
    """

    def summed(replicated, *rows):
        return jax.lax.psum(fn(replicated, *rows), AXIS)

    def call(replicated, *rows):
        return jax.shard_map(
            summed,
            mesh=mesh,
            in_specs=(PartitionSpec(), *[PartitionSpec(AXIS)] * len(rows)),
            out_specs=PartitionSpec(),
            # The check rejects Flax's RNN, whose initial carry is not
            # marked as differing between devices.
            check_vma=False,
        )(replicated, *rows)

    return call


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise InputError(
            f"--batch-size: {batch_size} does not split evenly over "
            f"{mesh.size} devices"
        )
