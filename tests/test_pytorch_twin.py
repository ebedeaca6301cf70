"""Specifications of the PyTorch twin: equal to the JAX model, and as good."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

import experiment
from config import Config
from Dataloader import WindowDataset, make_loader
from Initializers import create_model
from pytorch.convert import load_jax_checkpoint, load_jax_model
from pytorch.Dataloader import make_torch_loader
from pytorch.experiment import TORCH
from pytorch.Models import MERGES, Seq2Seq, normalize
from pytorch.TrainTest import (
    Trainer,
    forecast_windows,
    restore_checkpoint,
    save_checkpoint,
    train_epoch,
)
from TrainTest import make_checkpoint_manager
from TrainTest import save_checkpoint as save_jax

ROOT = Path(__file__).resolve().parent.parent
ENCODERS = [("uni", "sum")] + [("bi", merge) for merge in MERGES]
# float32 forecasts of the same weights, in a series' units; the linear
# series reaches 150, where float32 steps are 1.5e-5, so its errors are
# compared relative to the largest value of the test range.
TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def one_torch_thread():
    # As pytorch/RUN.py: the small matrices run fastest on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def twin_forecaster(model: Seq2Seq):
    def forecast(contexts: np.ndarray, horizon: int) -> np.ndarray:
        return forecast_windows(model, contexts, horizon, 32)

    return forecast


def forecast_inputs(config: Config):
    """The test windows and the rollout context that evaluation uses."""
    splits = experiment.load_splits(config)
    test = experiment.make_windows(config, splits)["test"]
    history = np.concatenate([splits.train.y, splits.val.y])
    rollout_context = history[-config.in_len :].astype(np.float32)[None]
    return splits, test, rollout_context


def make_jax_model(config: Config):
    """A freshly initialized JAX model with its head scaled down.

    At full size, an untrained model's rollout runs away within a few
    chunks, and two equal runaways say little.
    """
    model = create_model(config, jax.random.PRNGKey(3), 10, std_floor=1e-3)
    encoder, decoder = model.params
    head = {**decoder["head"], "kernel": 0.05 * decoder["head"]["kernel"]}
    return model.with_params((encoder, {**decoder, "head": head}))


# The twin computes what the JAX model computes.


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("encoder, merge", ENCODERS)
def test_jax_weights_give_the_same_forecasts(encoder, merge, layers):
    config = Config(hidden=8, encoder=encoder, merge=merge, layers=layers)
    jax_model = make_jax_model(config)
    twin = load_jax_model(jax_model)
    jax_forecast = experiment.forecaster(jax_model)
    teacher_forced = jax.jit(type(jax_model).teacher_forced)

    # One model for both series: the dataset only says where windows
    # come from, and a model unchanged compiles once.
    for dataset in ("sine", "linear"):
        splits, test, rollout_context = forecast_inputs(
            config.replace(dataset=dataset)
        )
        scale = max(1.0, float(np.max(np.abs(splits.test.y))))
        for contexts, horizon in (
            (test.contexts(), config.out_len),
            (rollout_context, len(splits.test)),
        ):
            expected = jax_forecast(contexts, horizon)
            got = twin_forecaster(twin)(contexts, horizon)
            assert got.shape == expected.shape == (len(contexts), horizon)
            assert np.max(np.abs(got - expected)) <= TOLERANCE * scale

        contexts, targets = test.contexts(), test.targets()
        expected, expected_target = teacher_forced(jax_model, contexts, targets)
        with torch.no_grad():
            got, got_target = twin.teacher_forced(
                torch.from_numpy(contexts), torch.from_numpy(targets)
            )
        np.testing.assert_allclose(got_target, expected_target, atol=1e-5)
        assert np.max(np.abs(got.numpy() - np.asarray(expected))) <= 1e-5


def test_jax_checkpoint_loads_into_the_twin(tmp_path):
    config = Config(hidden=8, encoder="bi", merge="concat", layers=2)
    jax_model = make_jax_model(config)
    norm = {"train_mean": 0.0, "train_std": 1.0, "std_floor": 1e-3}
    meta = {"val_mse": 0.5, "total_steps": 10, "train_seconds": 1.0}
    manager = make_checkpoint_manager(tmp_path / "checkpoints")
    save_jax(manager, 7, jax_model, norm=norm, meta=meta)
    manager.wait_until_finished()
    manager.close()

    twin, restored_meta = load_jax_checkpoint(tmp_path, "best")

    assert twin.config == config
    assert twin.std_floor == 1e-3
    assert restored_meta["epoch"] == 7
    assert restored_meta["norm"] == norm
    assert restored_meta["val_mse"] == meta["val_mse"]
    expected = load_jax_model(jax_model).state_dict()
    assert twin.state_dict().keys() == expected.keys()
    for name, value in twin.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)


def test_bi_two_layer_carries_merge_each_layer_forward_then_backward():
    hidden, batch, in_len = 3, 2, 7
    window = torch.randn(
        batch, in_len, generator=torch.Generator().manual_seed(0)
    )
    for merge, width in (("concat", 2 * hidden), ("sum", hidden)):
        config = Config(hidden=hidden, encoder="bi", merge=merge, layers=2)
        model = Seq2Seq(config, std_floor=1e-3).eval()

        with torch.no_grad():
            h, c = model.encode(window)
            # Layer by layer by hand: the next layer reads merged outputs.
            x = window[..., None]
            for k, lstm in enumerate(model.encoder):
                outputs, (h_n, c_n) = lstm(x)
                forward, backward = outputs[..., :hidden], outputs[..., hidden:]
                # Forward ends at the last step, backward at the first.
                torch.testing.assert_close(h_n[0], forward[:, -1])
                torch.testing.assert_close(h_n[1], backward[:, 0])
                torch.testing.assert_close(h[k], MERGES[merge](h_n[0], h_n[1]))
                torch.testing.assert_close(c[k], MERGES[merge](c_n[0], c_n[1]))
                x = MERGES[merge](forward, backward)

        assert h.shape == c.shape == (2, batch, width)
        assert model.encoder[1].input_size == width
        assert model.decoder.hidden_size == config.decoder_hidden == width
        assert model.generate(window, 9).shape == (batch, 9)


def test_normalize_floors_the_spread_of_a_flat_window():
    context = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])

    window, mean, std = normalize(context, std_floor=0.5)

    torch.testing.assert_close(mean, torch.tensor([[2.0], [5.0]]))
    torch.testing.assert_close(std, torch.tensor([[(2 / 3) ** 0.5], [0.5]]))
    torch.testing.assert_close(window[1], torch.zeros(3))


def test_torch_loader_gives_the_jax_loader_batches():
    splits = experiment.load_splits(Config())
    windows = WindowDataset(splits.val, 40, 20)
    for train in (True, False):
        jax_loader = make_loader(windows, 32, train=train, seed=5)
        torch_loader = make_torch_loader(windows, 32, train=train, seed=5)
        jax_loader.set_epoch(2)
        torch_loader.set_epoch(2)

        pairs = list(zip(jax_loader, torch_loader, strict=True))

        assert len(pairs) == len(torch_loader) > 1
        for jax_batch, torch_batch in pairs:
            assert torch_batch.keys() == {"context", "target", "mask"}
            for name, value in torch_batch.items():
                assert value.dtype == torch.float32
                np.testing.assert_array_equal(value, jax_batch[name])


def test_checkpoint_round_trip_keeps_forecasts_and_optimizer(tmp_path):
    config = Config(hidden=4, in_len=8, out_len=4, epochs=2)
    splits = experiment.load_splits(config)
    windows = experiment.make_windows(config, splits)
    loader = make_torch_loader(windows["train"], 32, train=True)
    trainer = Trainer(Seq2Seq(config, std_floor=1e-3), 2 * len(loader))
    train_epoch(trainer, loader)
    norm = {"std_floor": 1e-3}
    meta = {"val_mse": 0.5, "total_steps": 2 * len(loader)}

    save_checkpoint(tmp_path, "best", trainer, epoch=1, norm=norm, meta=meta)
    restored, restored_meta = restore_checkpoint(tmp_path, "best")

    contexts = windows["test"].contexts()
    np.testing.assert_array_equal(
        twin_forecaster(restored.model)(contexts, 9),
        twin_forecaster(trainer.model)(contexts, 9),
    )
    assert restored.model.config == config
    assert restored.lr == trainer.lr < config.lr
    assert restored_meta == {
        **meta,
        "epoch": 1,
        "norm": norm,
        "config": config.to_json(),
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.json",
        "best.pt",
    ]


# The twin's own runs.


def run_script(args: list[str], cwd: Path = ROOT):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


TINY = [
    "--dataset",
    "sine",
    "--epochs",
    "2",
    "--hidden",
    "4",
    "--in-len",
    "8",
    "--out-len",
    "4",
    "--quiet",
]


def test_run_script_writes_the_jax_runs_outputs(tmp_path):
    twin = run_script(["pytorch/RUN.py", *TINY, "--workdir", str(tmp_path)])
    jax_run = run_script(["RUN.py", *TINY, "--workdir", str(tmp_path)])

    assert twin.returncode == 0, twin.stderr
    assert jax_run.returncode == 0, jax_run.stderr
    run_dir = tmp_path / "pytorch" / "sine"
    for name in ("example_trajectory.png", "test_stitched.png", "rollout.png"):
        assert (run_dir / name).stat().st_size > 0
    ours = json.loads((run_dir / "metrics.json").read_text())
    theirs = json.loads((tmp_path / "sine" / "metrics.json").read_text())
    assert ours.keys() == theirs.keys()
    assert ours["config"] == theirs["config"]
    assert ours["test_windows"] == theirs["test_windows"]
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["best.json", "best.pt", "latest.json", "latest.pt"]
    assert (
        twin.stdout.split("\n")[1].split()
        == jax_run.stdout.split("\n")[1].split()
    )  # the same summary header
    assert "sine" in twin.stdout.split("\n")[2]

    restored = run_script(
        [
            "-m",
            "pytorch.RUN",
            "--restore",
            str(run_dir),
            "--workdir",
            str(tmp_path / "again"),
            "--quiet",
        ]
    )
    assert restored.returncode == 0, restored.stderr
    again = json.loads(
        (
            tmp_path
            / "again"
            / "pytorch"
            / "sine"
            / "restored"
            / "metrics.json"
        ).read_text()
    )
    assert again["test_window_mse"] == ours["test_window_mse"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hidden", "0"], "RUN.py: error: --hidden: must be at least 1\n"),
        (["--dataset", "missing.csv"], "RUN.py: error: missing.csv: no such"),
    ],
)
def test_bad_input_is_one_line_and_status_2(tmp_path, args, message):
    result = run_script(
        ["-m", "pytorch.RUN", *args, "--workdir", str(tmp_path), "--quiet"]
    )

    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1


@pytest.mark.slow
def test_twin_trained_with_defaults_meets_the_jax_targets(tmp_path):
    def run(dataset: str) -> dict:
        return experiment.run(
            Config(dataset=dataset), tmp_path, quiet=True, framework=TORCH
        )

    sine, linear = run("sine"), run("linear")

    assert sine["test_window_mse"] <= 1e-5
    assert sine["rollout_mse"] <= 1e-3
    assert linear["test_window_mse"] <= 1e-5
    assert linear["rollout_max_abs_error"] <= 0.05
