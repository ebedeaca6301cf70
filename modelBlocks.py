"""The encoder and decoder modules, and the per-window normalization."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.recurrent import DenseParams

import kernels
from modelUtils import (
    BiLSTMLayer,
    Carry,
    LSTMCellParams,
    LSTMLayer,
    OneMatmulLSTMCell,
    run_lstm,
)

Array = jax.Array
Carries = tuple[Carry, ...]  # one (c, h) per layer


class Encoder(nn.Module):
    """Reads a normalized window [batch, time] into one carry per layer.

    Layer k's final carry is what decoder layer k starts from.
    """

    hidden: int
    layers: int = 1
    bidirectional: bool = False
    merge: str = "sum"
    dropout: float = 0.0
    fused: bool = False  # LSTM layers by the C++ kernel

    @nn.compact
    def __call__(self, window: Array, *, train: bool = False) -> Carries:
        x = window[..., None]  # [batch, time, 1]
        carries = []
        for k in range(self.layers):
            if k > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            if self.bidirectional:
                layer = BiLSTMLayer(
                    self.hidden, self.merge, self.fused, name=f"lstm_{k}"
                )
            else:
                layer = LSTMLayer(self.hidden, self.fused, name=f"lstm_{k}")
            carry, x = layer(x)
            carries.append(carry)
        return tuple(carries)


class Decoder(nn.Module):
    """One step of a stack of LSTM cells and a Dense head.

    Maps the previous value [batch] to the next one [batch]. The head
    predicts the change from the previous value, which is what stays alike
    across windows once they are normalized.
    """

    hidden: int
    layers: int = 1

    @nn.compact
    def __call__(
        self, carries: Carries, previous: Array
    ) -> tuple[Carries, Array]:
        x = previous[:, None]
        new_carries = []
        for k, carry in enumerate(carries):
            carry, x = OneMatmulLSTMCell(self.hidden, name=f"lstm_{k}")(
                carry, x
            )
            new_carries.append(carry)
        change = nn.Dense(1, name="head")(x)[:, 0]
        return tuple(new_carries), previous + change


class TeacherForcedDecoder(nn.Module):
    """The decoder over a whole sequence of known inputs, layer by layer.

    It has `Decoder`'s parameters and computes what `Decoder` computes step
    by step when every step is fed the true previous value; run over the
    sequence, each layer is one scan (or one call of the fused kernel).
    """

    hidden: int
    layers: int = 1
    fused: bool = False

    @nn.compact
    def __call__(
        self, carries: Carries, inputs: Array
    ) -> tuple[Carries, Array]:
        """Carries, one per layer, and inputs [batch, time] -> the final
        carries and the predictions [batch, time]."""
        x = inputs[..., None]
        new_carries = []
        for k, carry in enumerate(carries):
            carry, x = run_lstm(
                self.hidden, f"lstm_{k}", x, carry, fused=self.fused
            )
            new_carries.append(carry)
        change = nn.Dense(1, name="head")(x)[..., 0]
        return tuple(new_carries), inputs + change


class FreeRunningDecoder(nn.Module):
    """The decoder run free for `steps` steps by the fused kernel.

    It has `Decoder`'s parameters and computes what `Decoder` computes
    step by step when each prediction is fed back as the next input, in
    one call (`kernels.lstm_decode`), which is not differentiable.
    """

    hidden: int
    layers: int = 1

    @nn.compact
    def __call__(self, carries: Carries, first: Array, steps: int) -> Array:
        """Carries, one per layer, and the last known value [batch] ->
        the predictions [batch, steps]."""
        x = first[:, None]
        cells = []
        for k, carry in enumerate(carries):
            cell = LSTMCellParams(self.hidden, name=f"lstm_{k}")
            cells.append(cell(carry, x))
            x = carry[1]  # the next cell's input has the shape of this h
        head = DenseParams(1, name="head")(x)
        return kernels.lstm_decode(carries, cells, head, first, steps)


def normalize(context: Array, std_floor: float) -> tuple[Array, Array, Array]:
    """Scales each window to zero mean and unit spread, as RevIN does.

    Args:
      context: [batch, in_len] in the series' units.
      std_floor: the smallest spread divided by, so a flat window stays
        finite; fitted on the training series.

    Returns:
      The scaled context [batch, in_len], and the mean and spread [batch, 1]
      that `denormalize` undoes it with.
    """
    mean = context.mean(axis=-1, keepdims=True)
    std = jnp.maximum(context.std(axis=-1, keepdims=True), std_floor)
    return (context - mean) / std, mean, std


def denormalize(values: Array, mean: Array, std: Array) -> Array:
    return values * std + mean
