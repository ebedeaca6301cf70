"""A bidirectional LSTM layer and the four ways to merge its directions.

Runs `modelUtils.BiLSTMLayer` with every merge in `MERGES` on the same
weights, and checks each against the two directions run by hand. Run from
the repository root:

    python _jax_gists/lstm_bidirectional.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn
import jax
import jax.numpy as jnp

from modelUtils import MERGES, BiLSTMLayer

BATCH, TIME, FEATURES, HIDDEN = 2, 6, 3, 4


def run_direction(cell_params, inputs, *, reverse: bool):
    """Steps one LSTM cell over time in Python, from zero state.

    Returns the final carry (c, h) and the outputs [batch, time, hidden] in
    the inputs' time order, whichever way the cell read them.
    """
    # Jitted so each step is one compiled call rather than one per op.
    step = jax.jit(nn.OptimizedLSTMCell(HIDDEN).apply)
    zeros = jnp.zeros((inputs.shape[0], HIDDEN))
    carry = (zeros, zeros)
    time = inputs.shape[1]
    steps = range(time - 1, -1, -1) if reverse else range(time)
    outputs = [None] * time
    for t in steps:
        carry, outputs[t] = step({"params": cell_params}, carry, inputs[:, t])
    return carry, jnp.stack(outputs, axis=1)


def main() -> None:
    data_key, init_key = jax.random.split(jax.random.key(0))
    inputs = jax.random.normal(data_key, (BATCH, TIME, FEATURES))
    print(f"inputs {inputs.shape}  [batch, time, features], hidden {HIDDEN}")

    # The weights do not depend on the merge, so one set serves all four.
    params = BiLSTMLayer(HIDDEN).init(init_key, inputs)["params"]

    # The nn.RNN names do not reach the params: both cells sit directly
    # under the layer, named in creation order, forward first.
    forward_carry, forward = run_direction(
        params["forward"], inputs, reverse=False
    )
    backward_carry, backward = run_direction(
        params["backward"], inputs, reverse=True
    )
    # Each direction's last word is its h: forward ends at the last step,
    # backward at the first.
    assert jnp.allclose(forward[:, -1], forward_carry[1], atol=1e-6)
    assert jnp.allclose(backward[:, 0], backward_carry[1], atol=1e-6)

    print(f"{'merge':<7} {'outputs':<12} {'carry c':<9} carry h")
    results = {}
    for name, merge in MERGES.items():
        layer = BiLSTMLayer(HIDDEN, merge=name)
        (c, h), outputs = layer.apply({"params": params}, inputs)
        results[name] = outputs
        print(f"{name:<7} {str(outputs.shape):<12} {str(c.shape):<9} {h.shape}")

        width = 2 * HIDDEN if name == "concat" else HIDDEN
        assert outputs.shape == (BATCH, TIME, width)
        assert c.shape == h.shape == (BATCH, width)
        assert jnp.allclose(outputs, merge(forward, backward), atol=1e-6)
        for got, f, b in zip(
            (c, h), forward_carry, backward_carry, strict=True
        ):
            assert jnp.allclose(got, merge(f, b), atol=1e-6)

    concat = results["concat"]
    assert jnp.allclose(concat[..., :HIDDEN], forward, atol=1e-6)
    assert jnp.allclose(concat[..., HIDDEN:], backward, atol=1e-6)
    assert jnp.allclose(results["mean"], results["sum"] / 2, atol=1e-6)
    assert jnp.all(results["max"] >= concat[..., :HIDDEN])
    assert jnp.all(results["max"] >= concat[..., HIDDEN:])
    print("concat = [forward, backward], sum = forward + backward,")
    print("mean = sum / 2, max >= both; outputs and carries match the")
    print("two directions run by hand: True")


if __name__ == "__main__":
    main()
