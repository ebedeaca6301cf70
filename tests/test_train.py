"""Specifications of TrainTest.py and of experiment.run's determinism."""

import contextlib
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiment
from config import Config
from Dataloader import Series, WindowDataset, load_dataset, make_loader
from Initializers import Seq2Seq, create_model
from TrainTest import (
    eval_step,
    evaluate,
    make_checkpoint_manager,
    open_checkpoints,
    restore_checkpoint,
    save_checkpoint,
    train_epoch,
    train_step,
)

CONFIG = Config(
    hidden=8, in_len=8, out_len=4, layers=2, dropout=0.1, batch_size=16
)
STD_FLOOR = 1e-3
TOTAL_STEPS = 100
TEACHER_FORCING = jnp.float32(1.0)  # as train_epoch passes it: one compile


def new_model(seed: int = 0) -> Seq2Seq:
    return create_model(
        CONFIG, jax.random.PRNGKey(seed), TOTAL_STEPS, STD_FLOOR
    )


@functools.cache
def fresh_model() -> Seq2Seq:
    """One shared initial model: each new one compiles train_step anew."""
    return new_model()


@functools.cache
def sine() -> Series:
    return load_dataset("sine").train


def windows(length: int, start: int = 0) -> WindowDataset:
    """Windows of `length` samples of the sine training series."""
    series = sine()[start : start + length]
    return WindowDataset(series, CONFIG.in_len, CONFIG.out_len)


def sine_batch(size: int = 32) -> dict[str, jax.Array]:
    data = windows(size + CONFIG.in_len + CONFIG.out_len - 1)
    return {
        "context": jnp.asarray(data.contexts()),
        "target": jnp.asarray(data.targets()),
        "mask": jnp.ones(size, jnp.float32),
    }


def leaves_equal(a, b) -> bool:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.array_equal(x, y) for x, y in pairs)


@contextlib.contextmanager
def count_compiles():
    """Counts XLA compilations by function name, e.g. 'jit(train_step)'.

    `_cache_size()` of a jitted function counts dispatch signatures, and a
    Python int step (a fresh TrainState) and an array step (every later
    one) are two signatures of one compiled program; this counts programs.
    """
    counts: dict[str, int] = {}

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            name = kwargs.get("fun_name", "")
            counts[name] = counts.get(name, 0) + 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


# One step and many.


def test_train_step_lowers_the_loss_on_a_sine_batch():
    model, batch = fresh_model(), sine_batch()
    key = jax.random.PRNGKey(1)

    losses = []
    for _ in range(30):
        model, metrics = train_step(model, batch, key, TEACHER_FORCING)
        losses.append(float(metrics["loss"]))

    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]


def test_one_step_updates_every_parameter_of_both_states():
    model = fresh_model()

    key = jax.random.PRNGKey(1)

    updated, _ = train_step(model, sine_batch(), key, TEACHER_FORCING)

    for state in ("encoder", "decoder"):
        before = jax.tree.leaves(getattr(model, state).params)
        after = jax.tree.leaves(getattr(updated, state).params)
        assert len(before) == len(after) > 0
        for old, new in zip(before, after, strict=True):
            assert not np.array_equal(old, new)
        assert int(getattr(model, state).step) == 0
        assert int(getattr(updated, state).step) == 1


def test_masked_rows_do_not_reach_the_loss():
    model, batch = fresh_model(), sine_batch()
    key = jax.random.PRNGKey(1)
    half = jnp.arange(32) < 16
    masked = dict(batch, mask=half.astype(jnp.float32))
    garbage = dict(
        masked,
        context=jnp.where(half[:, None], batch["context"], 1e3),
        target=jnp.where(half[:, None], batch["target"], -1e3),
    )

    _, clean = train_step(model, masked, key, TEACHER_FORCING)
    _, dirty = train_step(model, garbage, key, TEACHER_FORCING)

    np.testing.assert_allclose(clean["loss"], dirty["loss"], rtol=1e-6)


def test_train_and_eval_steps_compile_once_per_model():
    train = windows(100)  # 89 windows: 5 batches of 16, 9 dropped
    val = windows(40, start=200)  # 29 windows: 16 + 13 padded to 16
    train_loader = make_loader(train, CONFIG.batch_size, train=True)
    val_loader = make_loader(val, CONFIG.batch_size, train=False)
    key = jax.random.PRNGKey(1)

    with count_compiles() as compiles:
        model = new_model(seed=7)
        before = evaluate(model, val_loader)
        for epoch in range(1, 4):
            train_loader.set_epoch(epoch)
            model, loss = train_epoch(model, train_loader, key)
        after = evaluate(model, val_loader)

    assert len(train_loader) == 5
    assert int(model.encoder.step) == int(model.decoder.step) == 15
    assert np.isfinite(loss)
    assert before["forecasts"].shape == after["forecasts"].shape == (29, 4)
    assert compiles["jit(train_step)"] == 1
    assert compiles["jit(eval_step)"] == 1


# Evaluation.


@pytest.mark.parametrize("batch_size", [8, 10, 64])
def test_evaluate_averages_over_real_windows_only(batch_size):
    data = windows(35, start=300)  # 24 windows
    model = fresh_model()
    loader = make_loader(data, batch_size, train=False)

    result = evaluate(model, loader)

    # The per-window errors, from one batch of exactly the 24 windows.
    exact = {
        "context": jnp.asarray(data.contexts()),
        "target": jnp.asarray(data.targets()),
        "mask": jnp.ones(len(data), jnp.float32),
    }
    per_window = eval_step(model, exact)
    assert result["forecasts"].shape == (24, 4)
    np.testing.assert_allclose(
        result["forecasts"], per_window["forecast"], rtol=1e-5, atol=1e-6
    )
    for name in ("loss", "mse", "mae"):
        expected = float(np.mean(per_window[name]))
        np.testing.assert_allclose(result[name], expected, rtol=1e-5)
    errors = result["forecasts"] - data.targets()
    np.testing.assert_allclose(result["mse"], np.mean(errors**2), rtol=1e-5)
    np.testing.assert_allclose(
        result["mae"], np.mean(np.abs(errors)), rtol=1e-5
    )


# Checkpoints.


def train_epochs(model, loader, key, epochs):
    for epoch in epochs:
        loader.set_epoch(epoch)
        model, _ = train_epoch(model, loader, key)
    return model


def test_checkpoint_round_trip_resumes_bit_for_bit(tmp_path):
    loader = make_loader(windows(100), CONFIG.batch_size, train=True, seed=3)
    key = jax.random.PRNGKey(5)
    norm = {"train_mean": 0.1, "train_std": 0.7, "std_floor": STD_FLOOR}
    model = fresh_model()

    manager = make_checkpoint_manager(tmp_path / "checkpoints")
    for epoch in (1, 2):
        model = train_epochs(model, loader, key, [epoch])
        meta = {"val_mse": 1.0 / epoch, "total_steps": TOTAL_STEPS}
        save_checkpoint(manager, epoch, model, norm=norm, meta=meta)
    manager.wait_until_finished()
    manager.close()
    restored, info = restore_checkpoint(
        open_checkpoints(tmp_path / "checkpoints"), "latest"
    )

    assert info["epoch"] == 2
    assert info["norm"] == norm
    assert {key: info[key] for key in meta} == meta
    assert restored.config == model.config
    assert restored.std_floor == model.std_floor
    for state in ("encoder", "decoder"):
        ours, theirs = getattr(model, state), getattr(restored, state)
        assert leaves_equal(ours.params, theirs.params)
        assert leaves_equal(ours.opt_state, theirs.opt_state)
        assert int(ours.step) == int(theirs.step) == 10

    resumed = train_epochs(restored, loader, key, [3])
    continued = train_epochs(model, loader, key, [3])

    assert leaves_equal(resumed.params, continued.params)
    for state in ("encoder", "decoder"):
        ours, theirs = getattr(resumed, state), getattr(continued, state)
        assert leaves_equal(ours.opt_state, theirs.opt_state)
    assert not leaves_equal(resumed.params, model.params)


def test_best_checkpoint_has_the_lowest_val_mse(tmp_path):
    model = fresh_model()
    norm = {"std_floor": STD_FLOOR}

    manager = make_checkpoint_manager(tmp_path)
    for epoch, val_mse in enumerate([0.3, 0.1, 0.5]):
        meta = {"val_mse": val_mse, "total_steps": TOTAL_STEPS}
        save_checkpoint(manager, epoch, model, norm=norm, meta=meta)
    manager.wait_until_finished()
    kept = sorted(manager.all_steps())

    _, best = restore_checkpoint(manager, "best")
    _, latest = restore_checkpoint(manager, "latest")
    manager.close()
    assert (best["epoch"], best["val_mse"]) == (1, 0.1)
    assert (latest["epoch"], latest["val_mse"]) == (2, 0.5)
    assert kept == [1, 2]


# Whole runs.


def test_same_seed_gives_the_same_metrics(tmp_path):
    t = 0.25 * np.arange(240)
    path = tmp_path / "wave.csv"
    y = np.sin(t) + 0.01 * t
    rows = [f"{a},{b!r}" for a, b in zip(t.tolist(), y.tolist(), strict=True)]
    path.write_text("t,y\n" + "\n".join(rows) + "\n")
    config = CONFIG.replace(dataset=str(path), epochs=2)

    runs = [tmp_path / "first", tmp_path / "second"]
    for workdir in runs:
        experiment.run(config, workdir)

    metrics = [
        json.loads((workdir / "wave" / "metrics.json").read_text())
        for workdir in runs
    ]

    first, second = (
        {k: v for k, v in m.items() if k != "train_seconds"} for m in metrics
    )
    assert first == second
    assert first["epochs"] == 2
    assert np.isfinite(first["test_window_mse"])
    assert metrics[0]["train_seconds"] > 0
