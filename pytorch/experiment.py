"""One run of the torch twin on one series, measured as the JAX run is."""

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from config import Config, InputError
from Dataloader import Splits
from experiment import (
    Forecaster,
    config_differences,
    dataset_name,
    evaluate_forecasts,
    fit_normalization,
    load_splits,
    make_windows,
    write_json,
)
from pytorch.Dataloader import make_torch_loader
from pytorch.Models import Seq2Seq
from pytorch.TrainTest import (
    Trainer,
    evaluate,
    find_checkpoints,
    forecast_windows,
    has_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    train_epoch,
)
from TrainTest import teacher_forcing_ratio

log = logging.getLogger(__name__)


def train(
    config: Config, splits: Splits, run_dir: Path, *, quiet: bool = False
) -> tuple[Seq2Seq, dict[str, Any]]:
    """Trains on the training split, choosing the epoch by validation.

    As `experiment.train`: per-epoch numbers (logged), early stop
    after `patience` epochs without a new best, checkpoints every
    `checkpoint_every` epochs, at every new best and at the end, and a
    resume from the latest checkpoint found in `run_dir/checkpoints`.
    Returns the best model and the same summary of training.
    """
    windows = make_windows(config, splits)
    train_loader = make_torch_loader(
        windows["train"],
        config.batch_size,
        train=True,
        seed=config.seed,
        num_workers=config.num_workers,
    )
    val_loader = make_torch_loader(
        windows["val"], config.batch_size, train=False
    )
    norm = fit_normalization(splits)
    total_steps = config.epochs * len(train_loader)
    directory = run_dir / "checkpoints"

    def save(epoch, trainer, val_mse, seconds, *, best, stopped=False):
        meta = {
            "val_mse": val_mse,
            "total_steps": total_steps,
            "train_seconds": seconds,
            "stopped": stopped,
        }
        for which in ("latest", "best") if best else ("latest",):
            save_checkpoint(
                directory, which, trainer, epoch=epoch, norm=norm, meta=meta
            )

    if not has_checkpoint(directory):
        torch.manual_seed(config.seed)
        trainer = Trainer(Seq2Seq(config, norm["std_floor"]), total_steps)
        first_epoch, seconds, stopped = 1, 0.0, False
        epochs_run = 0
        best, best_epoch = evaluate(trainer.model, val_loader)["mse"], 0
        save(0, trainer, best, seconds, best=True)
    else:
        trainer, meta = restore_checkpoint(directory, "latest")
        differences = config_differences(config, trainer.model.config)
        if differences:
            raise InputError(
                f"{directory}: holds a run with another configuration "
                f"({'; '.join(differences)}); choose another --workdir"
            )
        trainer.model.config = config
        first_epoch, seconds = meta["epoch"] + 1, meta["train_seconds"]
        stopped, epochs_run = meta["stopped"], meta["epoch"]
        best_meta = restore_checkpoint(directory, "best")[1]
        best, best_epoch = best_meta["val_mse"], best_meta["epoch"]
        log.info("%s: resuming after epoch %d", run_dir, meta["epoch"])

    start = time.perf_counter() - seconds
    last_epoch = epochs_run if stopped else config.epochs
    for epoch in range(first_epoch, last_epoch + 1):
        ratio = teacher_forcing_ratio(config, epoch)
        lr = trainer.lr
        train_loader.set_epoch(epoch)
        # Dropout and sampling draws depend on (seed, epoch) alone, so a
        # resumed run goes on as the uninterrupted one would.
        torch.manual_seed(config.seed * 1_000_003 + epoch)
        loss = train_epoch(trainer, train_loader, ratio)
        if not math.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch}: training loss is {loss}")
        val = evaluate(trainer.model, val_loader)
        seconds = time.perf_counter() - start
        epochs_run = epoch

        improved = val["mse"] < best
        if improved:
            best, best_epoch = val["mse"], epoch
        stopped = bool(config.patience) and (
            epoch - best_epoch >= config.patience
        )
        last = stopped or epoch == config.epochs
        if improved or last or epoch % config.checkpoint_every == 0:
            save(
                epoch,
                trainer,
                val["mse"],
                seconds,
                best=improved,
                stopped=stopped,
            )

        if not quiet:
            log.info(
                "%s epoch %d/%d  train loss %.3e  val loss %.3e  "
                "val free-running mse %.3e  lr %.2e  teacher forcing %.2f",
                dataset_name(config.dataset),
                epoch,
                config.epochs,
                loss,
                val["loss"],
                val["mse"],
                lr,
                ratio,
            )
        if stopped:
            log.info("%s: no better for %d epochs", run_dir, config.patience)
            break

    trainer, meta = restore_checkpoint(directory, "best")
    trainer.model.config = config
    return trainer.model, {
        "epochs": config.epochs,
        "epochs_run": epochs_run,
        "stopped_early": stopped,
        "best_epoch": meta["epoch"],
        "best_val_mse": meta["val_mse"],
        "train_seconds": seconds,
    }


def forecaster(model: Seq2Seq) -> Forecaster:
    """The model's `generate` over windows, in batches of batch_size."""

    def forecast(contexts: np.ndarray, horizon: int) -> np.ndarray:
        return forecast_windows(
            model, contexts, horizon, model.config.batch_size
        )

    return forecast


def run(
    config: Config,
    workdir: Path,
    *,
    quiet: bool = False,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Trains and evaluates on `config.dataset`; writes `metrics.json`.

    The run goes to `run_dir`, by default `workdir/pytorch/<dataset>`,
    beside the JAX runs.
    """
    splits = load_splits(config)
    if run_dir is None:
        run_dir = Path(workdir) / "pytorch" / dataset_name(config.dataset)
    run_dir.mkdir(parents=True, exist_ok=True)
    model, summary = train(config, splits, run_dir, quiet=quiet)
    metrics = {
        "dataset": dataset_name(config.dataset),
        **evaluate_forecasts(forecaster(model), config, splits, run_dir),
        **summary,
        "config": config.to_json(),
    }
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def rerun_from_checkpoint(checkpoint_dir: Path, workdir: Path) -> dict:
    """Redoes forecasts, metrics and plots of a saved twin, untrained."""
    trainer, meta = restore_checkpoint(find_checkpoints(checkpoint_dir))
    model = trainer.model
    config = model.config
    splits = load_splits(config)
    run_dir = Path(workdir) / "pytorch" / dataset_name(config.dataset)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        "dataset": dataset_name(config.dataset),
        **evaluate_forecasts(forecaster(model), config, splits, run_dir),
        "epochs": config.epochs,
        "best_epoch": meta["epoch"],
        "train_seconds": meta["train_seconds"],
        "restored_from": str(Path(checkpoint_dir).absolute()),
        "config": config.to_json(),
    }
    write_json(run_dir / "metrics.json", metrics)
    return metrics
