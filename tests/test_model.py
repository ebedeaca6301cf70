"""Specifications of modelUtils.py, modelBlocks.py and Initializers.py."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from config import Config
from Initializers import Seq2Seq, create_model
from modelBlocks import denormalize, normalize
from modelUtils import (
    MERGES,
    BiLSTMLayer,
    LSTMLayer,
    OneMatmulLSTMCell,
    merge_carries,
    merge_concat,
    merge_max,
    merge_mean,
    merge_sum,
)
from TrainTest import generate

HIDDEN, IN_LEN, OUT_LEN, BATCH = 8, 8, 4, 3
LONG_HORIZON = 10  # 2.5 chunks of OUT_LEN


def tiny_config(**changes) -> Config:
    return Config(hidden=HIDDEN, in_len=IN_LEN, out_len=OUT_LEN).replace(
        **changes
    )


@functools.cache
def tiny_model(seed: int = 0, std_floor: float = 1e-3, **changes) -> Seq2Seq:
    """A freshly initialized model; cached, as models are immutable."""
    config = tiny_config(**changes)
    return create_model(config, jax.random.PRNGKey(seed), 10, std_floor)


# Jitted once per model config, so tests that share a model compile once.
encode = jax.jit(lambda model, window: model.encode(window))
decode = jax.jit(lambda model, carries, inputs: model.decode(carries, inputs))
decode_step = jax.jit(lambda model, carries, x: model.decode_step(carries, x))
decode_free = jax.jit(
    lambda model, carries, first, steps: model.decode_free(
        carries, first, steps
    ),
    static_argnums=3,
)
decode_with = jax.jit(
    lambda model, carries, inputs, use_truth: model.decode(
        carries, inputs, use_truth
    )
)
teacher_forced = jax.jit(
    lambda model, context, target: model.teacher_forced(context, target)
)


def sine_context(batch: int = BATCH, length: int = IN_LEN) -> jax.Array:
    """Windows of a sine at different phases, [batch, length]."""
    t = 0.25 * np.arange(length) + 0.7 * np.arange(batch)[:, None]
    return jnp.asarray(np.sin(t) + 0.1 * t, jnp.float32)


def random_values(key: int, shape) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float32)


def all_finite(x) -> bool:
    return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(x))


def leaves_equal(a, b) -> bool:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.array_equal(x, y) for x, y in pairs)


# Shapes of every encoder and merge.


def abstract_model(**changes) -> Seq2Seq:
    """The model's shapes only: traced, never compiled or run."""
    config = tiny_config(**changes)
    return jax.eval_shape(
        lambda key: create_model(config, key, 10, 1e-3),
        jax.random.PRNGKey(0),
    )


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("merge", list(MERGES))
@pytest.mark.parametrize("encoder", ["uni", "bi"])
def test_shapes_for_every_encoder_merge_and_depth(encoder, merge, layers):
    model = abstract_model(encoder=encoder, merge=merge, layers=layers)
    width = 2 * HIDDEN if (encoder, merge) == ("bi", "concat") else HIDDEN
    context = jax.ShapeDtypeStruct((BATCH, IN_LEN), jnp.float32)
    inputs = jax.ShapeDtypeStruct((BATCH, 5), jnp.float32)

    carries = jax.eval_shape(encode, model, context)
    outputs = jax.eval_shape(decode, model, carries, inputs)

    assert model.config.decoder_hidden == width
    assert len(carries) == layers
    for c, h in carries:
        assert c.shape == h.shape == (BATCH, width)
    assert outputs.shape == (BATCH, 5)
    for horizon in (OUT_LEN - 1, OUT_LEN, LONG_HORIZON):
        forecast = jax.eval_shape(generate, model, context, horizon)
        assert forecast.shape == (BATCH, horizon)


def test_shorter_horizons_are_prefixes_of_longer_ones():
    model = tiny_model(layers=2)
    context = sine_context()

    longest = generate(model, context, LONG_HORIZON)

    for horizon in (OUT_LEN - 1, OUT_LEN):
        np.testing.assert_allclose(
            generate(model, context, horizon),
            longest[:, :horizon],
            rtol=1e-6,
            atol=1e-6,
        )


# Merges.


def test_merges_have_exact_values():
    forward = jnp.array([[1.0, -2.0]])
    backward = jnp.array([[3.0, -5.0]])

    np.testing.assert_array_equal(
        merge_concat(forward, backward), [[1.0, -2.0, 3.0, -5.0]]
    )
    np.testing.assert_array_equal(merge_sum(forward, backward), [[4.0, -7.0]])
    np.testing.assert_array_equal(merge_mean(forward, backward), [[2.0, -3.5]])
    np.testing.assert_array_equal(merge_max(forward, backward), [[3.0, -2.0]])
    assert MERGES == {
        "concat": merge_concat,
        "sum": merge_sum,
        "mean": merge_mean,
        "max": merge_max,
    }


def test_merge_carries_pairs_c_with_c_and_h_with_h():
    forward = (jnp.array([[1.0]]), jnp.array([[2.0]]))
    backward = (jnp.array([[10.0]]), jnp.array([[20.0]]))

    c, h = merge_carries(merge_concat, forward, backward)

    np.testing.assert_array_equal(c, [[1.0, 10.0]])
    np.testing.assert_array_equal(h, [[2.0, 20.0]])


@pytest.mark.parametrize("features", [1, 5])
def test_one_matmul_cell_is_flax_optimized_cell_to_float_rounding(features):
    """Same parameters from the same key; the same sequence outputs and
    gradients, to 1e-5."""
    inputs = random_values(0, (BATCH, 6, features))
    ours = nn.RNN(OneMatmulLSTMCell(HIDDEN), return_carry=True)
    reference = nn.RNN(nn.OptimizedLSTMCell(HIDDEN), return_carry=True)
    params = ours.init(jax.random.PRNGKey(1), inputs)
    reference_params = reference.init(jax.random.PRNGKey(1), inputs)
    assert jax.tree.structure(params) == jax.tree.structure(reference_params)
    jax.tree.map(np.testing.assert_array_equal, params, reference_params)

    def loss(module, params):
        (c, h), outputs = module.apply(params, inputs)
        return jnp.sum(outputs**2) + jnp.sum(c * h), outputs

    (value, outputs), grads = jax.value_and_grad(
        functools.partial(loss, ours), has_aux=True
    )(params)
    (reference_value, reference_outputs), reference_grads = jax.value_and_grad(
        functools.partial(loss, reference), has_aux=True
    )(params)
    np.testing.assert_allclose(outputs, reference_outputs, atol=1e-5)
    np.testing.assert_allclose(value, reference_value, rtol=1e-5)
    close = functools.partial(np.testing.assert_allclose, atol=1e-5)
    jax.tree.map(close, grads, reference_grads)


def test_one_matmul_cell_makes_its_gates_in_one_matmul():
    cell = OneMatmulLSTMCell(HIDDEN)
    carry = (jnp.zeros((BATCH, HIDDEN)), jnp.zeros((BATCH, HIDDEN)))
    inputs = random_values(0, (BATCH, 3))
    params = cell.init(jax.random.PRNGKey(1), carry, inputs)
    jaxpr = jax.make_jaxpr(cell.apply)(params, carry, inputs)
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 1
    assert dots[0].invars[1].aval.shape == (3 + HIDDEN, 4 * HIDDEN)


def test_bi_layer_backward_carry_reads_the_window_end_to_start():
    inputs = random_values(0, (BATCH, 6, 1))
    bi = BiLSTMLayer(4, "concat")
    params = bi.init(jax.random.PRNGKey(1), inputs)["params"]
    forward_params, backward_params = params["forward"], params["backward"]
    uni = LSTMLayer(4)

    def run(cell_params, x):
        variables = {"params": {"OptimizedLSTMCell_0": cell_params}}
        return uni.apply(variables, x)[0]

    (c, h), outputs = bi.apply({"params": params}, inputs)
    c_forward, h_forward = run(forward_params, inputs)
    c_backward, h_backward = run(backward_params, inputs[:, ::-1])

    assert outputs.shape == (BATCH, 6, 8)
    np.testing.assert_allclose(c, jnp.concatenate([c_forward, c_backward], 1))
    np.testing.assert_allclose(h, jnp.concatenate([h_forward, h_backward], 1))


# Generation and decoding against step-by-step references.


def reference_generate(model, context: jax.Array, horizon: int) -> np.ndarray:
    """Generation written out as Python loops over decode_step."""
    in_len, out_len = model.config.in_len, model.config.out_len
    history = np.asarray(context)
    forecast = []
    while len(forecast) < horizon:
        window, mean, std = normalize(history[:, -in_len:], model.std_floor)
        carries = encode(model, window)
        previous = window[:, -1]
        chunk = []
        for _ in range(out_len):
            carries, previous = decode_step(model, carries, previous)
            chunk.append(previous)
        chunk = np.asarray(denormalize(jnp.stack(chunk, 1), mean, std))
        history = np.concatenate([history, chunk], axis=1)
        forecast.extend(chunk.T)
    return np.stack(forecast[:horizon], axis=1)


@pytest.mark.parametrize("encoder, merge", [("uni", "sum"), ("bi", "concat")])
def test_generate_equals_a_step_by_step_reference(encoder, merge):
    model = tiny_model(encoder=encoder, merge=merge, layers=2)
    context = sine_context()
    horizon = LONG_HORIZON

    forecast = generate(model, context, horizon)

    expected = reference_generate(model, context, horizon)
    assert forecast.shape == expected.shape == (BATCH, horizon)
    assert all_finite(forecast)
    np.testing.assert_allclose(forecast, expected, rtol=1e-6, atol=1e-6)


def test_teacher_forced_decode_equals_a_loop_over_decode_step():
    model = tiny_model(layers=2)
    carries = encode(model, sine_context())
    inputs = random_values(1, (BATCH, 6))

    outputs = decode(model, carries, inputs)

    assert all_finite((carries, outputs))
    expected = []
    for i in range(inputs.shape[1]):
        carries, value = decode_step(model, carries, inputs[:, i])
        expected.append(value)
    expected = jnp.stack(expected, axis=1)
    np.testing.assert_allclose(outputs, expected, rtol=1e-6, atol=1e-6)


def test_decode_fed_no_truth_runs_free():
    model = tiny_model(layers=2)
    carries = encode(model, sine_context())
    inputs = random_values(1, (BATCH, 6))
    never = jnp.zeros(inputs.shape, bool)

    outputs = decode_with(model, carries, inputs, never)

    expected = decode_free(model, carries, inputs[:, 0], 6)
    np.testing.assert_allclose(outputs, expected, rtol=1e-6, atol=1e-6)


def test_decode_mixes_truth_and_predictions_step_by_step():
    model = tiny_model(layers=2)
    carries = encode(model, sine_context())
    inputs = random_values(1, (BATCH, 6))
    use_truth = jax.random.bernoulli(jax.random.PRNGKey(2), 0.5, inputs.shape)

    outputs = decode_with(model, carries, inputs, use_truth)

    expected, previous = [], inputs[:, 0]
    for i in range(inputs.shape[1]):
        fed = jnp.where(use_truth[:, i], inputs[:, i], previous)
        fed = inputs[:, 0] if i == 0 else fed
        carries, previous = decode_step(model, carries, fed)
        expected.append(previous)
    np.testing.assert_allclose(
        outputs, jnp.stack(expected, 1), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("i", [0, 2, 4])
def test_teacher_forced_step_sees_no_later_input(i):
    model = tiny_model(layers=2)
    carries = encode(model, sine_context())
    inputs = random_values(1, (BATCH, 6))
    perturbed = inputs.at[:, i + 1 :].add(5.0)

    outputs = decode(model, carries, inputs)
    outputs_perturbed = decode(model, carries, perturbed)

    np.testing.assert_array_equal(
        outputs[:, : i + 1], outputs_perturbed[:, : i + 1]
    )
    assert not np.allclose(outputs[:, i + 1 :], outputs_perturbed[:, i + 1 :])


def test_teacher_forced_inputs_start_at_the_window_end():
    model = tiny_model(layers=2)
    context = sine_context()
    target = sine_context(length=IN_LEN + OUT_LEN)[:, IN_LEN:]

    prediction, normalized_target = teacher_forced(model, context, target)

    window, mean, std = normalize(context, model.std_floor)
    inputs = jnp.concatenate([window[:, -1:], normalized_target[:, :-1]], 1)
    expected = decode(model, encode(model, window), inputs)
    np.testing.assert_allclose(prediction, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        denormalize(normalized_target, mean, std), target, atol=1e-5
    )


# The encoder-to-decoder handoff.


def test_decoder_layer_k_starts_from_encoder_layer_k_carry():
    model = tiny_model(layers=2)
    window, _, _ = normalize(sine_context(), model.std_floor)
    carries = encode(model, window)
    previous = window[:, -1]
    bump = jax.tree.map(lambda a: a + 0.5, carries[1])

    (layer0, layer1), value = decode_step(model, carries, previous)
    (bumped0, bumped1), bumped_value = decode_step(
        model, (carries[0], bump), previous
    )
    _, swapped_value = decode_step(model, carries[::-1], previous)

    # Layer 0 reads only its own carry; layer 1 and the head see the bump.
    assert leaves_equal(layer0, bumped0)
    assert not np.allclose(layer1[0], bumped1[0])
    assert not np.allclose(value, bumped_value)
    assert not np.allclose(value, swapped_value)


def test_generate_hands_encoder_carries_to_the_decoder_unchanged():
    model = tiny_model(layers=2)
    context = sine_context()

    forecast = generate(model, context, OUT_LEN)

    window, mean, std = normalize(context, model.std_floor)
    carries = encode(model, window)
    expected = decode_free(model, carries, window[:, -1], OUT_LEN)
    expected = denormalize(expected, mean, std)
    np.testing.assert_allclose(forecast, expected, rtol=1e-6, atol=1e-6)


# Normalization.


def test_normalize_scales_each_window_and_denormalize_undoes_it():
    context = jnp.array([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0]])

    window, mean, std = normalize(context, std_floor=0.5)

    np.testing.assert_allclose(mean, [[2.5], [10.0]])
    np.testing.assert_allclose(std, [[np.sqrt(1.25)], [0.5]], rtol=1e-6)
    np.testing.assert_allclose(window[0].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(window[0].std(), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(window[1], [0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(
        denormalize(window, mean, std), context, rtol=1e-6
    )


@pytest.mark.parametrize("scale, shift", [(3.0, -5.0), (0.02, 100.0)])
def test_generate_is_affine_equivariant(scale, shift):
    model = tiny_model(encoder="bi", merge="concat", layers=2)
    model = model.replace(std_floor=1e-12)
    context = sine_context()
    horizon = LONG_HORIZON

    forecast = generate(model, context, horizon)
    moved = generate(model, scale * context + shift, horizon)

    expected = scale * forecast + shift
    np.testing.assert_allclose(
        moved, expected, rtol=1e-4, atol=1e-4 * scale * np.abs(forecast).max()
    )


# Initialization.


def kernels(params) -> list[np.ndarray]:
    flat = jax.tree_util.tree_leaves_with_path(params)
    return [a for path, a in flat if "kernel" in jax.tree_util.keystr(path)]


def test_create_model_is_deterministic_per_key():
    config = tiny_config()
    first, again, other = (
        create_model(config, jax.random.PRNGKey(seed), 10, 1e-3)
        for seed in (0, 0, 1)
    )

    assert leaves_equal(first.params, again.params)
    for state in ("encoder", "decoder"):
        ours = kernels(getattr(first, state).params)
        theirs = kernels(getattr(other, state).params)
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs, strict=True):
            assert not np.array_equal(a, b)


def test_create_model_starts_both_states_at_step_zero():
    model = tiny_model()

    assert int(model.encoder.step) == int(model.decoder.step) == 0
    assert model.std_floor == 1e-3
    assert model.config == tiny_config()
