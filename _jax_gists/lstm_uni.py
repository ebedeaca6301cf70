"""A unidirectional LSTM over a sequence: its outputs and its final carry.

Runs `modelUtils.LSTMLayer` and a plain `nn.RNN(nn.OptimizedLSTMCell)` on
the same toy batch. Run from the repository root:

    python _jax_gists/lstm_uni.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn
import jax
import jax.numpy as jnp

from modelUtils import LSTMLayer

BATCH, TIME, FEATURES, HIDDEN = 2, 7, 3, 5


def main() -> None:
    data_key, init_key = jax.random.split(jax.random.key(0))
    inputs = jax.random.normal(data_key, (BATCH, TIME, FEATURES))
    print(f"inputs  {inputs.shape}  [batch, time, features]")

    layer = LSTMLayer(HIDDEN)
    params = layer.init(init_key, inputs)["params"]
    (c, h), outputs = layer.apply({"params": params}, inputs)
    print("LSTMLayer")
    print(f"  outputs {outputs.shape}  [batch, time, hidden]")
    print(f"  carry c {c.shape}  [batch, hidden]")
    print(f"  carry h {h.shape}  [batch, hidden]")

    # The output at each step is that step's h, so the last output is the
    # h the layer ends with; c is the cell state and is never emitted.
    assert outputs.shape == (BATCH, TIME, HIDDEN)
    assert c.shape == h.shape == (BATCH, HIDDEN)
    assert jnp.array_equal(outputs[:, -1], h)
    print("  outputs[:, -1] == h: True")

    # The plain RNN keeps its cell under "cell", LSTMLayer directly under
    # its own scope; given the same cell weights they compute the same.
    rnn = nn.RNN(nn.OptimizedLSTMCell(HIDDEN), return_carry=True)
    rnn_params = {"cell": params["OptimizedLSTMCell_0"]}
    (rnn_c, rnn_h), rnn_outputs = rnn.apply({"params": rnn_params}, inputs)
    print("nn.RNN(nn.OptimizedLSTMCell), same cell weights")
    print(f"  outputs {rnn_outputs.shape}")
    print(f"  carry c {rnn_c.shape}, carry h {rnn_h.shape}")

    assert jnp.array_equal(rnn_outputs[:, -1], rnn_h)
    assert jnp.allclose(rnn_outputs, outputs)
    assert jnp.allclose(rnn_c, c) and jnp.allclose(rnn_h, h)
    print("  same outputs and carry as LSTMLayer: True")


if __name__ == "__main__":
    main()
