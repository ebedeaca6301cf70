"""An LSTM cell, LSTM layers over a sequence, and the merges of a
bidirectional pass."""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.linen.recurrent import DenseParams

import kernels

Array = jax.Array
Carry = kernels.Carry  # (c, h), each [batch, hidden]
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


class OneMatmulLSTMCell(nn.OptimizedLSTMCell):
    """Flax's `OptimizedLSTMCell` with the gates from one matmul of [x, h].

    The parameters, their names and their initialization are Flax's. In a
    scan a step's input is a slice of the sequence; Flax's cell adds its
    projection to the gates, and XLA on the CPU then fuses the slice into
    the gates' arithmetic, which makes a step about three times slower
    (220 against 80 us at batch 181, hidden 64). Through the matmul, the
    slice stays out of the gates.
    """

    @nn.compact
    def __call__(self, carry: Carry, inputs: Array) -> tuple[Carry, Array]:
        c, h = carry
        kernel, bias = self.kernel_and_bias(inputs, h)
        x_h, kernel, bias = promote_dtype(
            jnp.concatenate([inputs, h], axis=-1),
            kernel,
            bias,
            dtype=self.dtype,
        )
        i, f, g, o = jnp.split(x_h @ kernel + bias, 4, axis=-1)
        new_c = self.gate_fn(f) * c + self.gate_fn(i) * self.activation_fn(g)
        new_h = self.gate_fn(o) * self.activation_fn(new_c)
        return (new_c, new_h), new_h

    def kernel_and_bias(self, inputs: Array, h: Array) -> tuple[Array, Array]:
        """The gates' kernel [features + hidden, 4 hidden], which multiplies
        [x, h], and their bias [4 hidden], in the order i, f, g, o.

        Call it from the compact `__call__`: it creates the parameters.
        """
        # Flax's own parameter holder, so that names and keys match.
        holder = functools.partial(
            DenseParams,
            features=h.shape[-1],
            param_dtype=self.param_dtype,
            bias_init=self.bias_init,
        )
        gate_kernels, gate_biases = [], []
        for gate in "ifgo":
            input_kernel, _ = holder(
                use_bias=False, kernel_init=self.kernel_init, name=f"i{gate}"
            )(inputs)
            hidden_kernel, bias = holder(
                use_bias=True,
                kernel_init=self.recurrent_kernel_init,
                name=f"h{gate}",
            )(h)
            gate_kernels.append(
                jnp.concatenate([input_kernel, hidden_kernel], axis=0)
            )
            gate_biases.append(bias)
        return (
            jnp.concatenate(gate_kernels, axis=-1),
            jnp.concatenate(gate_biases),
        )


class FusedLSTM(OneMatmulLSTMCell):
    """The cell's parameters run over a whole sequence by the fused CPU
    kernel (`kernels.lstm_sequence`), as `nn.RNN` would run the cell.

    Call it with a carry (c, h), each [batch, hidden], and inputs
    [batch, time, features]; returns the final carry and the outputs
    [batch, time, hidden].
    """

    @nn.compact
    def __call__(self, carry: Carry, inputs: Array) -> tuple[Carry, Array]:
        kernel, bias = self.kernel_and_bias(inputs[:, 0], carry[1])
        return kernels.lstm_sequence(inputs, carry, kernel, bias)


class LSTMCellParams(OneMatmulLSTMCell):
    """The cell's parameters alone, as the fused kernels take them.

    Call it with the cell's carry and inputs (for their shapes); returns
    `kernel_and_bias`.
    """

    @nn.compact
    def __call__(self, carry: Carry, inputs: Array) -> tuple[Array, Array]:
        return self.kernel_and_bias(inputs, carry[1])


def run_lstm(
    hidden: int,
    name: str,
    inputs: Array,
    carry: Carry | None = None,
    *,
    fused: bool = False,
    reverse: bool = False,
) -> tuple[Carry, Array]:
    """An LSTM cell's parameters `name` run over inputs [batch, time,
    features] from `carry` (zeros if None), inside a compact method.

    Fused, by the C++ kernel; otherwise by Flax's `nn.RNN`. `reverse` reads
    the sequence from its end and returns the outputs in input order, as
    `nn.Bidirectional` runs its backward direction.
    """
    if not fused:
        rnn = nn.RNN(OneMatmulLSTMCell(hidden, name=name), return_carry=True)
        return rnn(
            inputs, initial_carry=carry, reverse=reverse, keep_order=True
        )
    if carry is None:
        zeros = jnp.zeros((inputs.shape[0], hidden), inputs.dtype)
        carry = (zeros, zeros)
    if reverse:
        inputs = jnp.flip(inputs, axis=1)
    carry, outputs = FusedLSTM(hidden, name=name)(carry, inputs)
    return carry, jnp.flip(outputs, axis=1) if reverse else outputs


class LSTMLayer(nn.Module):
    """One unidirectional LSTM layer over a sequence; `fused` runs it with
    the C++ kernel.

    Takes inputs [batch, time, features] and returns the final carry and the
    outputs [batch, time, hidden].
    """

    hidden: int
    fused: bool = False

    @nn.compact
    def __call__(self, inputs: Array) -> tuple[Carry, Array]:
        # Named as Flax's cell was, so that older checkpoints restore.
        return run_lstm(
            self.hidden, "OptimizedLSTMCell_0", inputs, fused=self.fused
        )


class BiLSTMLayer(nn.Module):
    """One bidirectional LSTM layer; `merge` combines the two directions.

    Takes inputs [batch, time, features] and returns the merged final carry
    and outputs [batch, time, width], where width is 2 * hidden for concat
    and hidden otherwise. The backward carry is the state after reading the
    whole window from its end back to its start, as in `nn.Bidirectional`.
    """

    hidden: int
    merge: str = "concat"
    fused: bool = False

    @nn.compact
    def __call__(self, inputs: Array) -> tuple[Carry, Array]:
        merge = MERGES[self.merge]
        run = functools.partial(run_lstm, self.hidden, fused=self.fused)
        carry_forward, forward = run("forward", inputs)
        carry_backward, backward = run("backward", inputs, reverse=True)
        carry = merge_carries(merge, carry_forward, carry_backward)
        return carry, merge(forward, backward)
