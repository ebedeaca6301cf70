"""The fused LSTM kernel computes what Flax's scan of the cell computes."""

import functools
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels
from config import Config
from Initializers import create_model
from modelUtils import OneMatmulLSTMCell
from TrainTest import forecast_windows, loss_and_grads

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "c++")) is None,
    reason="no C++ compiler to build the kernel with",
)


@pytest.fixture(scope="module", autouse=True)
def built_kernel():
    assert kernels.available()


def random_values(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def cell_kernel_and_bias(params) -> tuple[jax.Array, jax.Array]:
    """The cell's parameters as the kernel takes them."""
    kernel = jnp.concatenate(
        [
            jnp.concatenate(
                [params[f"i{g}"]["kernel"], params[f"h{g}"]["kernel"]]
            )
            for g in "ifgo"
        ],
        axis=-1,
    )
    return kernel, jnp.concatenate([params[f"h{g}"]["bias"] for g in "ifgo"])


def scalar(carry, outputs) -> jax.Array:
    """A loss that reaches every output and both parts of the carry."""
    c, h = carry
    weights = jnp.cos(jnp.arange(outputs.size)).reshape(outputs.shape)
    return jnp.sum(weights * outputs) + jnp.sum(c * c) + jnp.sum(jnp.sin(h))


# Batches above 16 rows are cut into chunks (67 rows: four of 16 and one
# of 3); 13 units make 52 gate columns, which are not whole vectors of 16.
# The gates go 16 units at a time where the CPU has AVX-512, and one at a
# time for the rest: 20 units take both ways.
@pytest.mark.parametrize(
    "batch, time, features, hidden",
    [(3, 6, 1, 8), (67, 5, 3, 13), (5, 4, 2, 64), (9, 5, 1, 20)],
)
def test_kernel_equals_flax_scan_of_the_cell(batch, time, features, hidden):
    inputs = random_values(0, (batch, time, features))
    carry = (
        random_values(1, (batch, hidden)),
        random_values(2, (batch, hidden)),
    )
    rnn = nn.RNN(OneMatmulLSTMCell(hidden), return_carry=True)
    params = rnn.init(jax.random.PRNGKey(3), inputs)["params"]

    def by_scan(params, inputs, carry):
        return scalar(
            *rnn.apply({"params": params}, inputs, initial_carry=carry)
        )

    def by_kernel(params, inputs, carry):
        kernel, bias = cell_kernel_and_bias(params["cell"])
        return scalar(*kernels.lstm_sequence(inputs, carry, kernel, bias))

    grad = functools.partial(jax.value_and_grad, argnums=(0, 1, 2))
    expected = jax.jit(grad(by_scan))(params, inputs, carry)
    result = jax.jit(grad(by_kernel))(params, inputs, carry)

    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5)
    jax.tree.map(close, result, expected)


@pytest.mark.parametrize("batch, time, hidden", [(67, 5, 13), (9, 6, 20)])
def test_inference_gives_the_outputs_of_training_bit_for_bit(
    batch, time, hidden
):
    # Outside differentiation the kernel keeps no residuals (LstmInfer);
    # under it, it does (LstmForward). Both must equal Flax's scan, and
    # each other exactly. An odd and an even length: the last c comes
    # from either of the two buffers it alternates between.
    inputs = random_values(0, (batch, time, 2))
    carry = (
        random_values(1, (batch, hidden)),
        random_values(2, (batch, hidden)),
    )
    rnn = nn.RNN(OneMatmulLSTMCell(hidden), return_carry=True)
    params = rnn.init(jax.random.PRNGKey(3), inputs)["params"]
    kernel, bias = cell_kernel_and_bias(params["cell"])

    inference = jax.jit(kernels.lstm_sequence)
    assert "LstmInfer" in inference.lower(inputs, carry, kernel, bias).as_text()
    inferred = inference(inputs, carry, kernel, bias)
    trained, _ = jax.vjp(kernels.lstm_sequence, inputs, carry, kernel, bias)
    expected = rnn.apply({"params": params}, inputs, initial_carry=carry)

    jax.tree.map(np.testing.assert_array_equal, inferred, trained)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5)
    jax.tree.map(close, inferred, expected)


def test_a_unit_in_a_vector_lane_rounds_as_one_left_over():
    # 20 units: 0-15 go 16 at a time (with AVX-512), 16-19 one at a time;
    # their 80 gate columns are whole vectors in the matmuls, so only the
    # gates' code differs between unit 0 and unit 16. Given the same
    # weights, bias and state, and each one's h the same weights into
    # the gates, the two stay equal, bit for bit, through every step,
    # forward and backward, if the vector and the scalar code round alike.
    hidden, batch, time = 20, 16, 12
    unit_0, unit_16 = (np.arange(4) * hidden + u for u in (0, 16))
    kernel = np.array(random_values(1, (2 + hidden, 4 * hidden)))
    kernel[:, unit_16] = kernel[:, unit_0]  # each gate's column
    kernel[2 + 16] = kernel[2 + 0]  # the row that h_16 multiplies
    bias = np.array(random_values(2, (4 * hidden,)))
    bias[unit_16] = bias[unit_0]
    inputs = random_values(0, (batch, time, 2))
    c, h = (np.array(random_values(k, (batch, hidden))) for k in (3, 4))
    c[:, 16], h[:, 16] = c[:, 0], h[:, 0]

    def loss(kernel, bias):
        (c_last, _), outputs = kernels.lstm_sequence(
            inputs, (c, h), kernel, bias
        )
        return jnp.sum(jnp.sin(outputs)) + jnp.sum(c_last**2), outputs

    (_, outputs), grads = jax.jit(
        jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    )(kernel, bias)
    dkernel, dbias = grads
    np.testing.assert_array_equal(outputs[..., 16], outputs[..., 0])
    np.testing.assert_array_equal(dbias[unit_16], dbias[unit_0])
    np.testing.assert_array_equal(dkernel[:2, unit_16], dkernel[:2, unit_0])


def test_kernel_outputs_do_not_depend_on_the_thread_count():
    batch, hidden = 150, 8  # eight chunks of rows: 20 each, the last 10
    inputs = random_values(0, (batch, 5, 1))
    carry = (jnp.zeros((batch, hidden)), jnp.zeros((batch, hidden)))
    kernel = random_values(1, (1 + hidden, 4 * hidden))
    bias = random_values(2, (4 * hidden,))

    def outputs_and_grads(threads: int):
        def loss(kernel, bias):
            run = kernels.lstm_sequence(
                inputs, carry, kernel, bias, threads=threads
            )
            return scalar(*run)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(kernel, bias)

    one, three = outputs_and_grads(1), outputs_and_grads(3)
    jax.tree.map(np.testing.assert_array_equal, one, three)


def decoder_reference(carries, cells, head, first, steps):
    """Free-running decoding by the cells of `OneMatmulLSTMCell`'s math."""
    previous, outputs = first, []
    for _ in range(steps):
        x, new_carries = previous[:, None], []
        for (c, h), (kernel, bias) in zip(carries, cells, strict=True):
            gates = jnp.concatenate([x, h], axis=-1) @ kernel + bias
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
            h = nn.sigmoid(o) * jnp.tanh(c)
            new_carries.append((c, h))
            x = h
        carries = new_carries
        previous = previous + (x @ head[0] + head[1])[:, 0]
        outputs.append(previous)
    return jnp.stack(outputs, axis=1)


# Two layers, and a batch cut into chunks of rows with a partial one.
@pytest.mark.parametrize(
    "batch, hidden, layers", [(3, 8, 1), (67, 13, 2), (67, 20, 2)]
)
def test_decoder_kernel_equals_the_cells_step_by_step(batch, hidden, layers):
    carries = [
        (
            random_values(10 + k, (batch, hidden)),
            random_values(20 + k, (batch, hidden)),
        )
        for k in range(layers)
    ]
    cells = [
        (
            0.5
            * random_values(
                30 + k, ((1 if k == 0 else hidden) + hidden, 4 * hidden)
            ),
            random_values(40 + k, (4 * hidden,)),
        )
        for k in range(layers)
    ]
    head = (0.3 * random_values(5, (hidden, 1)), random_values(6, (1,)))
    first = random_values(7, (batch,))

    result = kernels.lstm_decode(carries, cells, head, first, 9)
    expected = decoder_reference(carries, cells, head, first, 9)

    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
    for threads in (1, 3):
        again = kernels.lstm_decode(
            carries, cells, head, first, 9, threads=threads
        )
        np.testing.assert_array_equal(again, result)


@pytest.mark.parametrize("differentiated", [False, True])
@pytest.mark.parametrize("hidden", [4, 20])
def test_a_nan_input_gives_nan_outputs(hidden, differentiated):
    inputs = jnp.array([[[1.0], [jnp.nan], [2.0]]])
    carry = (jnp.zeros((1, hidden)), jnp.zeros((1, hidden)))
    kernel = random_values(1, (1 + hidden, 4 * hidden))
    bias = jnp.zeros(4 * hidden)

    run = jax.vjp if differentiated else lambda f, *args: (f(*args), None)
    (_, outputs), _ = run(kernels.lstm_sequence, inputs, carry, kernel, bias)

    assert np.isfinite(outputs[0, 0]).all()
    assert np.isnan(outputs[0, 1:]).all()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"encoder": "bi", "merge": "concat", "layers": 2},
        {"encoder": "bi", "merge": "max", "dropout": 0.3, "layers": 2},
        {"teacher_forcing": "linear"},
    ],
)
def test_training_loss_and_gradients_equal_those_of_the_scan(changes):
    """The same parameters, loss and gradients with either kernel, to 1e-5,
    dropout and scheduled sampling included."""
    config = Config(hidden=8, in_len=8, out_len=4, **changes)
    context = random_values(0, (6, 8))
    batch = {
        "context": context,
        "target": context[:, -4:] + random_values(1, (6, 4)),
        "mask": jnp.ones(6),
    }
    key, ratio = jax.random.PRNGKey(2), jnp.float32(0.5)

    results = []
    for kernel in ("fused", "scan"):
        model = create_model(
            config.replace(kernel=kernel), jax.random.PRNGKey(0), 10, 1e-3
        )
        results.append(
            (model.params, *loss_and_grads(model, batch, key, ratio))
        )

    jax.tree.map(np.testing.assert_array_equal, results[0][0], results[1][0])
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    jax.tree.map(close, results[0][1:], results[1][1:])


@pytest.mark.parametrize(
    "changes", [{}, {"encoder": "bi", "merge": "concat", "layers": 2}]
)
def test_forecasts_equal_those_of_the_scan(changes):
    """Free-running forecasts over several chunks, in batches with a
    padded last one, to 1e-5 of the series' scale."""
    config = Config(hidden=8, in_len=8, out_len=4, batch_size=4, **changes)
    contexts = np.sin(0.3 * np.arange(10)[:, None] + np.arange(8)[None])

    forecasts = [
        forecast_windows(
            create_model(
                config.replace(kernel=kernel), jax.random.PRNGKey(0), 10, 1e-3
            ),
            contexts,
            horizon=11,
            batch_size=4,
        )
        for kernel in ("fused", "scan")
    ]

    assert forecasts[0].shape == (10, 11)
    np.testing.assert_allclose(*forecasts, rtol=1e-5, atol=1e-5)
