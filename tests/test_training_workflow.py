"""Specifications of how a run trains, selects its epoch, scores and logs."""

import contextlib
import functools
import io
import json
import logging
import logging.handlers
import math
import re
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorboard.backend.event_processing import event_accumulator

import metrics
import RUN
import TrainTest
from config import Config
from Dataloader import WindowDataset, load_dataset
from Initializers import Seq2Seq, create_model, make_optimizer, make_schedule
from modelBlocks import normalize
from TrainTest import teacher_forcing_ratio, train_epoch, train_step

# One decoder layer and no dropout, so a train step's loss is exactly the
# loss of the model's own forward pass.
MODEL_CONFIG = Config(hidden=8, in_len=8, out_len=4, batch_size=16)
STD_FLOOR = 1e-3

# The smallest run that still goes through every step of RUN.py; season 4
# fits the 8-sample window, so all three baselines are scored.
TINY_FLAGS = ["--dataset", "sine", "--epochs", "3", "--hidden", "8"]
TINY_FLAGS += ["--in-len", "8", "--out-len", "4", "--season", "4"]
SCALAR_TAGS = (
    "train/loss",
    "val/loss",
    "val/free_running_mse",
    "lr",
    "teacher_forcing_ratio",
)
EPOCH_LINE = re.compile(r"epoch \d+/\d+")


@functools.cache
def new_model() -> Seq2Seq:
    """One shared model: each new one compiles train_step anew."""
    return create_model(MODEL_CONFIG, jax.random.PRNGKey(0), 100, STD_FLOOR)


@functools.cache
def sine_batch(size: int = 16) -> dict[str, jax.Array]:
    length = size + MODEL_CONFIG.in_len + MODEL_CONFIG.out_len - 1
    data = WindowDataset(
        load_dataset("sine").train[:length],
        MODEL_CONFIG.in_len,
        MODEL_CONFIG.out_len,
    )
    return {
        "context": jnp.asarray(data.contexts()),
        "target": jnp.asarray(data.targets()),
        "mask": jnp.ones(size, jnp.float32),
    }


def scalars(directory: Path, tag: str) -> tuple[list[int], np.ndarray]:
    """The steps and values TensorBoard reads for `tag` in `directory`."""
    events = read_events(directory).Scalars(tag)
    return [e.step for e in events], np.array([e.value for e in events])


def read_events(directory: Path) -> event_accumulator.EventAccumulator:
    accumulator = event_accumulator.EventAccumulator(
        str(directory),
        size_guidance={
            event_accumulator.SCALARS: 0,
            event_accumulator.IMAGES: 0,
        },
    )
    return accumulator.Reload()


# ---------------------------------------------------------------------------
# Teacher forcing and scheduled sampling.


def decoder_inputs(model: Seq2Seq) -> tuple:
    """Carries of a sine batch, and decoder inputs that start at its end.

    Every input after the first is 100, far from any prediction, so a
    decoder that read one where it should not would show it.
    """
    window, _, _ = normalize(sine_batch()["context"], STD_FLOOR)
    carries = model.encode(window)
    inputs = jnp.full((window.shape[0], 4), 100.0).at[:, 0].set(window[:, -1])
    return carries, inputs


def test_decode_fed_no_truth_is_free_running():
    model = new_model()
    carries, inputs = decoder_inputs(model)

    decoded = model.decode(carries, inputs, jnp.zeros(inputs.shape, bool))

    free = model.decode_free(carries, inputs[:, 0], inputs.shape[1])
    np.testing.assert_allclose(decoded, free, atol=1e-6)
    assert not np.allclose(decoded, model.decode(carries, inputs), atol=0.1)


def test_decode_fed_all_truth_is_teacher_forcing():
    model = new_model()
    carries, inputs = decoder_inputs(model)

    decoded = model.decode(carries, inputs, jnp.ones(inputs.shape, bool))

    np.testing.assert_allclose(
        decoded, model.decode(carries, inputs), atol=1e-6
    )
    free = model.decode_free(carries, inputs[:, 0], inputs.shape[1])
    assert not np.allclose(decoded, free, atol=0.1)


def mse(prediction: jax.Array, target: jax.Array) -> float:
    return float(jnp.mean((prediction - target) ** 2))


def test_train_step_with_ratio_one_has_the_teacher_forced_loss():
    model, batch = new_model(), sine_batch()

    _, out = train_step(model, batch, jax.random.PRNGKey(1), jnp.float32(1))

    prediction, target = model.teacher_forced(batch["context"], batch["target"])
    assert float(out["loss"]) == pytest.approx(mse(prediction, target), 1e-5)


def test_train_step_with_ratio_zero_has_the_free_running_loss():
    config = MODEL_CONFIG.replace(teacher_forcing="linear")
    model = create_model(config, jax.random.PRNGKey(0), 100, STD_FLOOR)
    batch = sine_batch()

    _, out = train_step(model, batch, jax.random.PRNGKey(1), jnp.float32(0))

    window, mean, std = normalize(batch["context"], STD_FLOOR)
    free = model.decode_free(model.encode(window), window[:, -1], 4)
    target = (batch["target"] - mean) / std
    assert float(out["loss"]) == pytest.approx(mse(free, target), 1e-5)
    teacher_forced = mse(
        *model.teacher_forced(batch["context"], batch["target"])
    )
    assert float(out["loss"]) != pytest.approx(teacher_forced, 1e-3)


@pytest.mark.parametrize("teacher_forcing", ["always", "linear"])
def test_a_batch_in_passes_has_the_loss_and_gradients_of_one_pass(
    teacher_forcing, monkeypatch
):
    config = MODEL_CONFIG.replace(teacher_forcing=teacher_forcing)
    model = create_model(config, jax.random.PRNGKey(0), 100, STD_FLOOR)
    batch = dict(sine_batch(20))
    batch["mask"] = batch["mask"].at[5:8].set(0.0)  # masked rows stay out
    key, ratio = jax.random.PRNGKey(1), jnp.float32(0.5)

    def loss_and_grads(pass_size: int):
        monkeypatch.setattr(TrainTest, "PASS_SIZE", pass_size)
        run = functools.partial(TrainTest.loss_and_grads, model, batch)
        return run(key, ratio), str(jax.make_jaxpr(run)(key, ratio))

    one, one_program = loss_and_grads(8192)
    # Hidden 8, 7 rows a pass: three passes, the last padded by one row.
    passes, program = loss_and_grads(7 * 8)
    assert "length=3" in program and "length=3" not in one_program

    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    jax.tree.map(close, passes, one)
    assert float(one[0]) > 0


def test_changing_the_truth_ratio_each_epoch_does_not_recompile():
    model, batch, key = new_model(), sine_batch(), jax.random.PRNGKey(1)
    # A fresh state's step is a Python int, later an array: two signatures
    # of one program, both seen in a warm-up of two steps.
    model, _ = train_epoch(model, [batch, batch], key, 1.0)
    before = train_step._cache_size()

    for ratio in (0.75, 0.5, 0.0):  # Python floats, as run_epochs passes
        model, _ = train_epoch(model, [batch], key, ratio)

    assert train_step._cache_size() == before


def ratios(config: Config, epochs: range) -> list[float]:
    return [teacher_forcing_ratio(config, epoch) for epoch in epochs]


def test_always_teacher_forcing_feeds_the_truth_every_epoch():
    assert ratios(Config(epochs=50), range(1, 51)) == [1.0] * 50


def test_linear_teacher_forcing_falls_from_one_to_zero_over_its_span():
    config = Config(epochs=10, teacher_forcing="linear", tf_decay_epochs=4)

    assert ratios(config, range(1, 8)) == pytest.approx(
        [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0]
    )


def test_linear_teacher_forcing_stops_at_its_floor():
    config = Config(
        epochs=10, teacher_forcing="linear", tf_min=0.3, tf_decay_epochs=4
    )

    values = ratios(config, range(1, 11))

    assert values[0] == 1.0
    assert values[4:] == pytest.approx([0.3] * 6)
    assert min(values) == pytest.approx(0.3)


def test_linear_teacher_forcing_spans_all_epochs_by_default():
    config = Config(epochs=8, teacher_forcing="linear")

    assert ratios(config, range(1, 9)) == ratios(
        config.replace(tf_decay_epochs=8), range(1, 9)
    )


def test_inverse_sigmoid_teacher_forcing_values():
    config = Config(teacher_forcing="inverse-sigmoid", tf_k=10.0)

    assert ratios(config, [1, 11, 31]) == pytest.approx(
        [10 / 11, 10 / (10 + math.e), 10 / (10 + math.e**3)]
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"teacher_forcing": "always"},
        {"teacher_forcing": "linear", "tf_min": 0.1},
        {"teacher_forcing": "inverse-sigmoid", "tf_k": 3.0},
    ],
)
def test_teacher_forcing_never_rises(changes):
    values = ratios(Config(epochs=60, **changes), range(1, 61))

    assert all(0 <= v <= 1 for v in values)
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))


# ---------------------------------------------------------------------------
# Learning rate and gradient clipping.


def learning_rates(name: str, total_steps: int = 200) -> np.ndarray:
    config = Config(lr=0.01, lr_schedule=name)
    schedule = make_schedule(config, total_steps)
    return np.array([schedule(step) for step in range(total_steps + 1)])


def test_constant_learning_rate_is_constant():
    np.testing.assert_allclose(learning_rates("constant"), 0.01, rtol=1e-6)


def test_cosine_learning_rate_halves_midway_and_ends_at_zero():
    lrs = learning_rates("cosine")

    assert lrs[0] == pytest.approx(0.01)
    assert lrs[100] == pytest.approx(0.005)
    assert lrs[200] == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.diff(lrs) <= 0)


def test_warmup_cosine_learning_rate_peaks_after_five_percent():
    lrs = learning_rates("warmup-cosine")

    assert lrs[0] == 0.0
    assert lrs[5] == pytest.approx(0.005)
    assert int(np.argmax(lrs)) == 10
    assert lrs[10] == pytest.approx(0.01)
    assert lrs[200] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    "clip_norm, scale, expected_norm",
    [(1.0, 1e6, 1.0), (1.0, 0.1, 0.1), (0.0, 1e6, 1e6)],
)
def test_gradients_are_clipped_to_the_global_norm(
    clip_norm, scale, expected_norm
):
    config = Config(clip_norm=clip_norm, lr_schedule="constant")
    optimizer = make_optimizer(config, total_steps=10)
    params = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
    # Global norm `scale`, split across two leaves.
    grads = {"a": scale * jnp.array([0.6, 0.0]), "b": scale * jnp.array([0.8])}

    _, state = optimizer.update(grads, optimizer.init(params), params)

    # Adam's first update is m / sqrt(v), blind to the gradient's scale;
    # its first moment, (1 - b1) times the gradient it saw, is not.
    mu = optax.tree_utils.tree_get(state, "mu")
    seen = np.concatenate([mu["a"], mu["b"]]) / 0.1
    np.testing.assert_allclose(
        seen, expected_norm * np.array([0.6, 0.0, 0.8]), rtol=1e-5
    )


# ---------------------------------------------------------------------------
# Errors and baselines.


def test_forecast_errors_exact_values():
    errors = metrics.forecast_errors(
        np.array([[0.0, 2.0, 1.0]]), np.array([[0.0, 1.0, 3.0]])
    )

    # Errors 0, 1, -2; sMAPE terms 0 (both zero), 2/3 and 1.
    assert errors == pytest.approx(
        {
            "mse": 5 / 3,
            "mae": 1.0,
            "rmse": math.sqrt(5 / 3),
            "smape": 100 * 5 / 9,
        }
    )


def test_forecast_errors_of_a_perfect_forecast_are_zero():
    truth = np.array([[0.0, -1.0], [2.0, 0.0]])

    assert metrics.forecast_errors(truth, truth) == {
        "mse": 0.0,
        "mae": 0.0,
        "rmse": 0.0,
        "smape": 0.0,
    }


CONTEXTS = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 2.0, 0.0, -2.0]])


def test_last_value_repeats_the_window_end():
    np.testing.assert_array_equal(
        metrics.last_value(CONTEXTS, 3), [[4, 4, 4], [-2, -2, -2]]
    )


def test_drift_extends_the_line_through_the_window_ends():
    np.testing.assert_allclose(
        metrics.drift(CONTEXTS, 3), [[5, 6, 7], [-4, -6, -8]]
    )


def test_seasonal_naive_repeats_the_last_season():
    np.testing.assert_array_equal(
        metrics.seasonal_naive(CONTEXTS, 5, season=2),
        [[3, 4, 3, 4, 3], [0, -2, 0, -2, 0]],
    )
    np.testing.assert_array_equal(
        metrics.seasonal_naive(CONTEXTS, 2, season=4), CONTEXTS[:, :2]
    )


@pytest.mark.parametrize("season", [0, 5])
def test_seasonal_naive_rejects_a_season_the_window_cannot_hold(season):
    with pytest.raises(ValueError, match=f"season {season}"):
        metrics.seasonal_naive(CONTEXTS, 3, season)


@pytest.mark.parametrize("max_lag", [40, 60])
def test_estimate_season_finds_the_sine_period(max_lag):
    # sin(2 pi 0.1 t) sampled every 0.25: a period of 40 samples.
    sine = load_dataset("sine").train.y

    assert metrics.estimate_season(sine, max_lag) == 40


def test_estimate_season_finds_none_in_a_line_or_in_noise():
    line = load_dataset("linear").train.y
    noise = np.random.default_rng(0).normal(size=1000)

    assert metrics.estimate_season(line, 60) is None
    assert metrics.estimate_season(noise, 60) is None


# ---------------------------------------------------------------------------
# Two tiny seeded runs through RUN.py, end to end: TensorBoard, metrics.json,
# seeds.json and log lines.


@pytest.fixture(scope="module")
def seeded_runs(tmp_path_factory):
    """RUN.py --seeds 0,1 on a tiny run, not quiet, stderr no terminal."""
    workdir = tmp_path_factory.mktemp("workdir")
    argv = [*TINY_FLAGS, "--seeds", "0,1"]
    logger = logging.getLogger("experiment")
    records = logging.handlers.BufferingHandler(capacity=10_000)
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()) as stdout,
            contextlib.redirect_stderr(io.StringIO()) as stderr,
        ):
            status = RUN.main([*argv, "--workdir", str(workdir)])
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    runs = workdir / "sine"
    return types.SimpleNamespace(
        status=status,
        dir=runs / "seed0",
        metrics=[
            json.loads((runs / f"seed{s}" / "metrics.json").read_text())
            for s in (0, 1)
        ],
        summary=json.loads((runs / "seeds.json").read_text()),
        log=[record.getMessage() for record in records.buffer],
        stdout=stdout.getvalue(),
        stderr=stderr.getvalue(),
    )


def test_every_epoch_logs_its_scalars_to_tensorboard(seeded_runs):
    for tag in SCALAR_TAGS:
        steps, values = scalars(seeded_runs.dir / "tensorboard", tag)
        assert steps == [1, 2, 3], tag
        assert np.all(np.isfinite(values)), tag


def test_logged_learning_rate_and_teacher_forcing_follow_the_config(
    seeded_runs,
):
    _, lrs = scalars(seeded_runs.dir / "tensorboard", "lr")
    _, ratios_logged = scalars(
        seeded_runs.dir / "tensorboard", "teacher_forcing_ratio"
    )

    assert lrs[0] == pytest.approx(Config().lr)
    assert np.all(np.diff(lrs) < 0)
    np.testing.assert_array_equal(ratios_logged, 1.0)


def test_best_epoch_is_the_lowest_logged_validation_mse(seeded_runs):
    _, val_mse = scalars(
        seeded_runs.dir / "tensorboard", "val/free_running_mse"
    )
    saved = seeded_runs.metrics[0]

    assert saved["best_epoch"] == 1 + int(np.argmin(val_mse))
    # The best checkpoint's number, logged as float32.
    assert saved["best_val_mse"] == pytest.approx(val_mse.min(), rel=1e-6)


def test_tensorboard_holds_a_forecast_figure_and_the_hparams(seeded_runs):
    events = read_events(seeded_runs.dir / "tensorboard")
    figure_steps = [e.step for e in events.Images("val/example_forecast")]
    _, best = scalars(
        seeded_runs.dir / "tensorboard" / "hparams",
        "hparam/best_val_free_running_mse",
    )

    assert figure_steps == [3]
    assert best == pytest.approx(
        [seeded_runs.metrics[0]["best_val_mse"]], rel=1e-6
    )


def test_metrics_json_holds_the_test_scores_and_baselines(seeded_runs):
    saved = seeded_runs.metrics[0]
    baseline_mse = {
        name: saved[f"test_window_baseline_{name}_mse"]
        for name in ("last_value", "drift", "seasonal_naive")
    }

    for prefix in ("test_window", "rollout"):
        for name in ("mse", "mae", "rmse", "smape"):
            assert math.isfinite(saved[f"{prefix}_{name}"])
        assert saved[f"{prefix}_rmse"] == pytest.approx(
            math.sqrt(saved[f"{prefix}_mse"])
        )
    assert saved["best_baseline"] == min(baseline_mse, key=baseline_mse.get)
    assert saved["times_better_than_best_baseline"] == pytest.approx(
        min(baseline_mse.values()) / saved["test_window_mse"]
    )


def test_seeds_json_holds_the_mean_and_spread_of_the_runs(seeded_runs):
    mses = [run["test_window_mse"] for run in seeded_runs.metrics]

    assert seeded_runs.status == 0
    assert mses[0] != mses[1]
    assert seeded_runs.summary["seeds"] == [0, 1]
    assert seeded_runs.summary["test_window_mse"] == pytest.approx(
        np.mean(mses)
    )
    assert seeded_runs.summary["test_window_mse_std"] == pytest.approx(
        np.std(mses, ddof=1)
    )
    assert "test MSE" in seeded_runs.stdout and "±" in seeded_runs.stdout


def test_without_quiet_or_terminal_each_epoch_logs_a_line(seeded_runs):
    epochs = [EPOCH_LINE.search(line) for line in seeded_runs.log]

    assert [m[0] for m in epochs if m] == 2 * [
        "epoch 1/3",
        "epoch 2/3",
        "epoch 3/3",
    ]
    assert "%|" not in seeded_runs.stderr  # and no progress bar


# ---------------------------------------------------------------------------
# Early stopping, quietly.


def test_patience_stops_training_and_keeps_best_and_latest(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    # Steps of 10 wreck the model at once: no epoch beats epoch 0.
    argv = [*TINY_FLAGS, "--epochs", "6", "--patience", "2"]
    argv += ["--lr", "10", "--lr-schedule", "constant"]

    status = RUN.main([*argv, "--workdir", str(tmp_path), "--quiet"])

    run_dir = tmp_path / "sine"
    saved = json.loads((run_dir / "metrics.json").read_text())
    steps, val_mse = scalars(run_dir / "tensorboard", "val/free_running_mse")
    checkpoints = [
        p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()
    ]
    assert status == 0
    assert saved["epochs_run"] == 2 < saved["epochs"] == 6
    assert steps == [1, 2]
    assert saved["best_epoch"] == 0
    assert np.all(val_mse > saved["best_val_mse"])
    assert sorted(checkpoints, key=int) == ["0", "2"]
    # --quiet: no line per epoch.
    assert not [r for r in caplog.records if EPOCH_LINE.search(r.getMessage())]
