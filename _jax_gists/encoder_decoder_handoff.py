"""The handoff from encoder to decoder: layer k's carry starts layer k.

Builds a tiny untrained two-layer model with a bidirectional concat
encoder, so only shapes and the relations between the decoding modes mean
anything. Run from the repository root:

    python _jax_gists/encoder_decoder_handoff.py
"""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn
import jax
import jax.numpy as jnp

from config import Config
from Initializers import create_model
from modelBlocks import denormalize, normalize

CONFIG = Config(
    in_len=24, out_len=8, encoder="bi", merge="concat", hidden=8, layers=2
)
BATCH = 3
HORIZON = 20  # longer than out_len, so generate re-encodes between chunks
STD_FLOOR = 1e-3


def make_sine_windows(batch: int) -> tuple[jax.Array, jax.Array]:
    """Context [batch, in_len] and target [batch, out_len] of shifted sines."""
    t = jnp.arange(CONFIG.in_len + CONFIG.out_len)
    phase = jnp.linspace(0.0, jnp.pi, batch)[:, None]
    series = 5.0 + 2.0 * jnp.sin(2 * jnp.pi * t / 12 + phase)
    return series[:, : CONFIG.in_len], series[:, CONFIG.in_len :]


def decode_step_by_hand(decoder_params, carries, previous):
    """One decoder step written out, cell k fed the carry of encoder layer k."""
    x = previous[:, None]
    new_carries = []
    for k, carry in enumerate(carries):
        cell = nn.OptimizedLSTMCell(CONFIG.decoder_hidden)
        cell_params = {"params": decoder_params[f"lstm_{k}"]}
        carry, x = cell.apply(cell_params, carry, x)
        new_carries.append(carry)
    change = nn.Dense(1).apply({"params": decoder_params["head"]}, x)[:, 0]
    return tuple(new_carries), previous + change


def show_handoff(model, carries) -> None:
    """Prints and checks the carry widths that pass from layer k to layer k."""
    width = CONFIG.decoder_hidden
    print(f"hidden {CONFIG.hidden}, decoder hidden {width} (bi concat)")
    for k, (c, h) in enumerate(carries):
        kernel = model.decoder.params[f"lstm_{k}"]["hf"]["kernel"]
        print(
            f"  layer {k}: encoder carry c {c.shape} h {h.shape} -> "
            f"decoder lstm_{k} hidden {kernel.shape[-1]}"
        )
        assert c.shape == h.shape == (BATCH, 2 * CONFIG.hidden)
        assert kernel.shape == (width, width)


def check_first_step(model, carries, previous) -> None:
    """Checks one decode_step against the step written out by hand."""
    new_carries, value = model.decode_step(carries, previous)
    hand_carries, hand_value = decode_step_by_hand(
        model.decoder.params, carries, previous
    )
    assert jnp.allclose(value, hand_value, atol=1e-5)
    for got, expected in zip(
        jax.tree.leaves(new_carries), jax.tree.leaves(hand_carries), strict=True
    ):
        assert jnp.allclose(got, expected, atol=1e-5)
    print("one decode_step == cell k started from encoder carry k: True")


def show_decoding(model, carries, context, target) -> jax.Array:
    """Runs teacher-forced and free-running decoding from the same carries.

    Returns the free-running values [batch, out_len], still normalized.
    """
    window, mean, std = normalize(context, STD_FLOOR)
    previous = window[:, -1]

    # Teacher forcing feeds the true previous value, normalized by the
    # window's own mean and spread like everything the model sees.
    target_normalized = (target - mean) / std
    inputs = jnp.concatenate(
        [previous[:, None], target_normalized[:, :-1]], axis=1
    )
    forced = model.decode(carries, inputs)
    print(f"decode (teacher-forced) inputs {inputs.shape} -> {forced.shape}")
    method_forced, method_target = model.teacher_forced(context, target)
    assert jnp.allclose(forced, method_forced, atol=1e-5)
    assert jnp.allclose(target_normalized, method_target, atol=1e-5)
    print("teacher_forced(context, target) gives the same: True")

    free = model.decode_free(carries, previous, CONFIG.out_len)
    print(f"decode_free first {previous.shape} -> {free.shape}")
    # Free running is teacher forcing on the model's own outputs.
    own_inputs = jnp.concatenate([previous[:, None], free[:, :-1]], axis=1)
    assert jnp.allclose(model.decode(carries, own_inputs), free, atol=1e-5)
    assert jnp.allclose(forced[:, 0], free[:, 0], atol=1e-5)
    print("decode on its own outputs == decode_free: True")
    return free


def show_generate(model, context, free) -> None:
    """Generates past out_len and checks the first chunk against `free`."""
    forecast = model.generate(context, HORIZON)
    chunks = math.ceil(HORIZON / CONFIG.out_len)
    print(
        f"generate horizon {HORIZON} (out_len {CONFIG.out_len}, "
        f"{chunks} chunks) -> {forecast.shape}"
    )
    assert forecast.shape == (BATCH, HORIZON)
    assert jnp.all(jnp.isfinite(forecast))

    _, mean, std = normalize(context, STD_FLOOR)
    first_chunk = denormalize(free, mean, std)
    assert jnp.allclose(forecast[:, : CONFIG.out_len], first_chunk, atol=1e-4)
    print("generate first chunk == denormalized decode_free: True")


def main() -> None:
    model = create_model(
        CONFIG, jax.random.key(0), total_steps=1, std_floor=STD_FLOOR
    )
    context, target = make_sine_windows(BATCH)
    window, mean, std = normalize(context, STD_FLOOR)
    print(f"context {context.shape}  window {window.shape}  [batch, in_len]")
    print(f"mean {mean.shape}  std {std.shape}  [batch, 1]")
    assert jnp.allclose(window.mean(axis=-1), 0.0, atol=1e-5)
    assert jnp.allclose(window.std(axis=-1), 1.0, atol=1e-5)

    carries = model.encode(window)
    show_handoff(model, carries)
    check_first_step(model, carries, window[:, -1])
    free = show_decoding(model, carries, context, target)
    show_generate(model, context, free)


if __name__ == "__main__":
    main()
