"""The Flax/optax training loop in its smallest form: a Dense layer on a line.

Shows init, apply, grad and update, nothing else. Run from the repository
root:

    python _jax_gists/dense_model.py
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

SLOPE, INTERCEPT = 3.0, -1.0
STEPS = 300


def make_line(key: jax.Array, n: int = 64) -> tuple[jax.Array, jax.Array]:
    """Points on the line with a little noise: x [n, 1], y [n, 1]."""
    x_key, noise_key = jax.random.split(key)
    x = jax.random.uniform(x_key, (n, 1), minval=-1.0, maxval=1.0)
    noise = 0.05 * jax.random.normal(noise_key, (n, 1))
    return x, SLOPE * x + INTERCEPT + noise


def main() -> None:
    data_key, init_key = jax.random.split(jax.random.key(0))
    x, y = make_line(data_key)

    model = nn.Dense(features=1)
    params = model.init(init_key, x)["params"]
    optimizer = optax.sgd(learning_rate=0.1)
    opt_state = optimizer.init(params)

    def loss_fn(params, x, y):
        prediction = model.apply({"params": params}, x)
        return jnp.mean((prediction - y) ** 2)

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    initial_loss = loss_fn(params, x, y)
    for step in range(STEPS):
        params, opt_state, loss = train_step(params, opt_state, x, y)
        if step % 50 == 0 or step == STEPS - 1:
            print(f"step {step:3d}  loss {float(loss):.5f}")

    kernel = float(params["kernel"][0, 0])
    bias = float(params["bias"][0])
    print(f"learned weights: kernel {kernel:.3f} (true {SLOPE})")
    print(f"                 bias   {bias:.3f} (true {INTERCEPT})")

    assert loss < initial_loss / 100
    # The noise is small, so the fit recovers the line to a few hundredths.
    assert abs(kernel - SLOPE) < 0.05 and abs(bias - INTERCEPT) < 0.05


if __name__ == "__main__":
    main()
