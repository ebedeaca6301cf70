"""One run on one series: train, keep checkpoints, forecast, measure, plot."""

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

import plots
from config import Config, InputError
from Dataloader import (
    Splits,
    WindowDataset,
    check_windows,
    load_dataset,
    make_loader,
)
from Initializers import Seq2Seq, create_model
from TrainTest import (
    evaluate,
    forecast_windows,
    make_checkpoint_manager,
    open_checkpoints,
    restore_checkpoint,
    save_checkpoint,
    train_epoch,
)

log = logging.getLogger(__name__)


def dataset_name(dataset: str) -> str:
    """The folder name of a dataset: a toy series' name or a file's stem."""
    return Path(dataset).stem


def fit_normalization(splits: Splits) -> dict[str, float]:
    """Statistics of the training split, the only data anything is fit to.

    Windows are normalized by their own mean and spread; the training
    spread sets the floor that keeps a flat window finite.
    """
    mean, std = float(np.mean(splits.train.y)), float(np.std(splits.train.y))
    return {
        "train_mean": mean,
        "train_std": std,
        "std_floor": max(1e-3 * std, 1e-8),
    }


def make_windows(config: Config, splits: Splits) -> dict[str, WindowDataset]:
    """Windows cut inside each split, so none straddles two of them."""
    windows = {}
    for name in ("train", "val", "test"):
        series = getattr(splits, name)
        windows[name] = WindowDataset(
            series, config.in_len, config.out_len, config.stride
        )
        check_windows(windows[name], name, series.source)
    return windows


def config_differences(config: Config, other: Config) -> list[str]:
    """Fields in which two runs differ, worker count aside."""
    ours, theirs = config.to_json(), other.to_json()
    return [
        f"{name} {ours[name]!r} vs {theirs[name]!r}"
        for name in ours
        if name != "num_workers" and ours[name] != theirs[name]
    ]


def train(
    config: Config, splits: Splits, run_dir: Path
) -> tuple[Seq2Seq, dict[str, Any]]:
    """Trains on the training split, choosing the epoch by validation.

    Checkpoints go to `run_dir/checkpoints`: every `checkpoint_every`
    epochs and whenever validation improves; the latest one and the one of
    lowest free-running validation MSE are kept. A run that finds its own
    checkpoints there resumes from the latest. Returns the best model and
    a summary of training.
    """
    windows = make_windows(config, splits)
    train_loader = make_loader(
        windows["train"],
        config.batch_size,
        train=True,
        seed=config.seed,
        num_workers=config.num_workers,
    )
    val_loader = make_loader(windows["val"], config.batch_size, train=False)
    norm = fit_normalization(splits)
    total_steps = config.epochs * len(train_loader)
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    manager = make_checkpoint_manager(run_dir / "checkpoints")

    def validate_and_save(epoch, model, best, seconds) -> float:
        val_mse = evaluate(model, val_loader)["mse"]
        due = epoch % config.checkpoint_every == 0 or epoch == config.epochs
        if val_mse < best or due:
            meta = {
                "val_mse": val_mse,
                "total_steps": total_steps,
                "train_seconds": seconds,
            }
            save_checkpoint(manager, epoch, model, norm=norm, meta=meta)
        return val_mse

    if manager.latest_step() is None:
        model = create_model(config, init_key, total_steps, norm["std_floor"])
        first_epoch, seconds = 1, 0.0
        best = validate_and_save(0, model, math.inf, seconds)
    else:
        model, meta = restore_checkpoint(manager, "latest")
        differences = config_differences(config, model.config)
        if differences:
            raise InputError(
                f"{manager.directory}: holds a run with another "
                f"configuration ({'; '.join(differences)}); "
                "choose another --workdir"
            )
        model = model.replace(config=config)
        first_epoch, seconds = meta["epoch"] + 1, meta["train_seconds"]
        best = restore_checkpoint(manager, "best")[1]["val_mse"]
        log.info("resuming after epoch %d", meta["epoch"])

    start = time.perf_counter() - seconds
    for epoch in range(first_epoch, config.epochs + 1):
        train_loader.set_epoch(epoch)
        model, loss = train_epoch(model, train_loader, dropout_key)
        if not math.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch}: training loss is {loss}")
        seconds = time.perf_counter() - start
        val_mse = validate_and_save(epoch, model, best, seconds)
        best = min(best, val_mse)
        log.info(
            "epoch %d/%d  train loss %.3e  val mse %.3e",
            epoch,
            config.epochs,
            loss,
            val_mse,
        )
    manager.wait_until_finished()

    model, meta = restore_checkpoint(manager, "best")
    manager.close()
    return model.replace(config=config), {
        "epochs": config.epochs,
        "best_epoch": meta["epoch"],
        "train_seconds": seconds,
    }


Forecaster = Callable[[np.ndarray, int], np.ndarray]


def evaluate_forecasts(
    forecast: Forecaster, config: Config, splits: Splits, run_dir: Path
) -> dict[str, Any]:
    """Test metrics of free-running forecasts, beside a naive baseline.

    `forecast(contexts [n, in_len], horizon)` returns [n, horizon]; any
    model that maps windows to forecasts in the series' units fits. Writes
    the example, stitched and rollout plots into `run_dir`.
    """
    test = make_windows(config, splits)["test"]
    contexts, targets = test.contexts(), test.targets()
    forecasts = forecast(contexts, config.out_len)
    errors = forecasts - targets
    last_value = np.repeat(contexts[:, -1:], config.out_len, axis=1)

    history = np.concatenate([splits.train.y, splits.val.y])
    history_t = np.concatenate([splits.train.t, splits.val.t])
    context = history[-config.in_len :].astype(np.float32)[None]
    rollout = forecast(context, len(splits.test))[0]
    rollout_error = rollout - splits.test.y

    name = dataset_name(config.dataset)
    example = len(test) // 2
    t_context = splits.test.t[test.starts[example] :][: config.in_len]
    plots.plot_example(
        run_dir / "example_trajectory.png",
        t_context,
        contexts[example],
        test.target_times(example),
        targets[example],
        forecasts[example],
        f"{name}: one test window",
    )
    # Every out_len-th window: forecasts that tile the test range.
    tiles = np.arange(0, len(test), max(1, config.out_len // config.stride))
    plots.plot_stitched(
        run_dir / "test_stitched.png",
        splits.test.t,
        splits.test.y,
        np.stack([test.target_times(i) for i in tiles]),
        forecasts[tiles],
        f"{name}: test-window forecasts placed at their t",
    )
    plots.plot_rollout(
        run_dir / "rollout.png",
        history_t[-4 * config.in_len :],
        history[-4 * config.in_len :],
        splits.test.t,
        splits.test.y,
        rollout,
        f"{name}: {len(rollout)}-step rollout from the training range's end",
    )

    return {
        "test_windows": len(test),
        "test_window_mse": float(np.mean(errors**2)),
        "test_window_mae": float(np.mean(np.abs(errors))),
        "baseline_last_value_mse": float(np.mean((last_value - targets) ** 2)),
        "baseline_last_value_mae": float(np.mean(np.abs(last_value - targets))),
        "rollout_steps": len(rollout),
        "rollout_mse": float(np.mean(rollout_error**2)),
        "rollout_max_abs_error": float(np.max(np.abs(rollout_error))),
        "rollout_baseline_last_value_mse": float(
            np.mean((history[-1] - splits.test.y) ** 2)
        ),
    }


def forecaster(model: Seq2Seq) -> Forecaster:
    """The model's jitted `generate`, over windows in fixed-size batches."""

    def forecast(contexts: np.ndarray, horizon: int) -> np.ndarray:
        return forecast_windows(
            model, contexts, horizon, model.config.batch_size
        )

    return forecast


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Writes beside the target, then renames: the file is whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def load_splits(config: Config) -> Splits:
    return load_dataset(
        config.dataset, config.test_fraction, config.val_fraction
    )


def run(config: Config, workdir: Path) -> dict[str, Any]:
    """Trains and evaluates on `config.dataset`; writes `metrics.json`."""
    splits = load_splits(config)
    run_dir = Path(workdir) / dataset_name(config.dataset)
    run_dir.mkdir(parents=True, exist_ok=True)
    model, summary = train(config, splits, run_dir)
    metrics = {
        "dataset": dataset_name(config.dataset),
        **evaluate_forecasts(forecaster(model), model.config, splits, run_dir),
        **summary,
        "config": config.to_json(),
    }
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def rerun_from_checkpoint(checkpoint_dir: Path, workdir: Path) -> dict:
    """Redoes forecasts, metrics and plots of a saved model, untrained."""
    manager = open_checkpoints(checkpoint_dir)
    model, meta = restore_checkpoint(manager, "best")
    manager.close()
    config = model.config
    splits = load_splits(config)
    run_dir = Path(workdir) / dataset_name(config.dataset)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        "dataset": dataset_name(config.dataset),
        **evaluate_forecasts(forecaster(model), model.config, splits, run_dir),
        "epochs": config.epochs,
        "best_epoch": meta["epoch"],
        "train_seconds": meta["train_seconds"],
        "restored_from": str(Path(checkpoint_dir).absolute()),
        "config": config.to_json(),
    }
    write_json(run_dir / "metrics.json", metrics)
    return metrics
