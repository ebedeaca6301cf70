"""LSTM layers over a sequence and the merges of a bidirectional pass."""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Carry = tuple[Array, Array]  # (c, h), each [batch, hidden]
Merge = Callable[[Array, Array], Array]


def merge_concat(forward: Array, backward: Array) -> Array:
    return jnp.concatenate([forward, backward], axis=-1)


def merge_sum(forward: Array, backward: Array) -> Array:
    return forward + backward


def merge_mean(forward: Array, backward: Array) -> Array:
    return 0.5 * (forward + backward)


def merge_max(forward: Array, backward: Array) -> Array:
    return jnp.maximum(forward, backward)


MERGES: dict[str, Merge] = {
    "concat": merge_concat,
    "sum": merge_sum,
    "mean": merge_mean,
    "max": merge_max,
}


def merge_carries(merge: Merge, forward: Carry, backward: Carry) -> Carry:
    """Merges the (c, h) carries of the two directions pairwise."""
    return jax.tree.map(merge, forward, backward)


class LSTMLayer(nn.Module):
    """One unidirectional LSTM layer over a sequence.

    Takes inputs [batch, time, features] and returns the final carry and the
    outputs [batch, time, hidden].
    """

    hidden: int

    @nn.compact
    def __call__(self, inputs: Array) -> tuple[Carry, Array]:
        cell = nn.OptimizedLSTMCell(self.hidden)
        return nn.RNN(cell, return_carry=True)(inputs)


class BiLSTMLayer(nn.Module):
    """One bidirectional LSTM layer; `merge` combines the two directions.

    Takes inputs [batch, time, features] and returns the merged final carry
    and outputs [batch, time, width], where width is 2 * hidden for concat
    and hidden otherwise. The backward carry is the state after reading the
    whole window from its end back to its start.
    """

    hidden: int
    merge: str = "concat"

    @nn.compact
    def __call__(self, inputs: Array) -> tuple[Carry, Array]:
        merge = MERGES[self.merge]
        forward = nn.RNN(nn.OptimizedLSTMCell(self.hidden, name="forward"))
        backward = nn.RNN(nn.OptimizedLSTMCell(self.hidden, name="backward"))
        bidirectional = nn.Bidirectional(
            forward, backward, merge_fn=merge, return_carry=True
        )
        (carry_forward, carry_backward), outputs = bidirectional(inputs)
        return merge_carries(merge, carry_forward, carry_backward), outputs
