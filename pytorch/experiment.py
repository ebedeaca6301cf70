"""One run of the torch twin on one series, measured as the JAX run is."""

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from config import Config
from Dataloader import Splits
from experiment import (
    Forecaster,
    Framework,
    Progress,
    check_same_config,
    fit_normalization,
    make_windows,
    run_epochs,
    steps_per_epoch,
    training_summary,
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
from TrainTest import NonFiniteLossError

log = logging.getLogger(__name__)


class TorchSession:
    """The twin in training: its loaders and its checkpoint files."""

    def __init__(self, config, trainer, windows, directory, norm, total_steps):
        self.config = config
        self.trainer = trainer
        self.val_windows = windows["val"]
        self.train_loader = make_torch_loader(
            windows["train"],
            config.batch_size,
            train=True,
            seed=config.seed,
            num_workers=config.num_workers,
        )
        self.val_loader = make_torch_loader(
            windows["val"], config.batch_size, train=False
        )
        self.directory = directory
        self.norm = norm
        self.total_steps = total_steps

    def learning_rate(self) -> float:
        return self.trainer.lr

    def train_epoch(self, epoch: int, truth_ratio: float) -> float:
        self.train_loader.set_epoch(epoch)
        # Dropout and sampling draws depend on (seed, epoch) alone, so a
        # resumed run goes on as the uninterrupted one would.
        torch.manual_seed(self.config.seed * 1_000_003 + epoch)
        loss = train_epoch(self.trainer, self.train_loader, truth_ratio)
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"training loss is {loss}")
        return loss

    def evaluate(self) -> dict[str, Any]:
        return evaluate(self.trainer.model, self.val_loader)

    def save(self, progress: Progress, val_mse: float, due: bool) -> None:
        # Its files are small and quick to write: every call writes.
        meta = progress.checkpoint_meta(val_mse, self.total_steps)
        best = progress.best_epoch == progress.epoch
        for which in ("latest", "best") if best else ("latest",):
            save_checkpoint(
                self.directory,
                which,
                self.trainer,
                epoch=progress.epoch,
                norm=self.norm,
                meta=meta,
            )

    def latest_saved(self) -> int | None:
        if not has_checkpoint(self.directory):
            return None
        info = json.loads((self.directory / "latest.json").read_text())
        return info["meta"]["epoch"]


def train(
    config: Config,
    splits: Splits,
    run_dir: Path,
    *,
    quiet: bool = False,
    overwrite: bool = False,
) -> tuple[Seq2Seq, dict[str, Any]]:
    """Trains as `experiment.train` does, with the same epoch loop.

    Checkpoints are `run_dir/checkpoints/{latest,best}.{pt,json}`; a run
    that finds its own there resumes from the latest. With `overwrite`,
    those four files are deleted (and only they) and training starts
    afresh.
    """
    windows = make_windows(config, splits)
    norm = fit_normalization(splits)
    total_steps = config.epochs * steps_per_epoch(config, windows)
    directory = run_dir / "checkpoints"
    if overwrite:
        for which in ("latest", "best"):
            for suffix in (".pt", ".json"):
                (directory / f"{which}{suffix}").unlink(missing_ok=True)

    if has_checkpoint(directory):
        trainer, meta = restore_checkpoint(directory, "latest")
        check_same_config(directory, config, trainer.model.config)
        trainer.model.config = config
        progress = Progress.from_json(meta)
        log.info("%s: resuming after epoch %d", directory, progress.epoch)
    else:
        torch.manual_seed(config.seed)
        trainer = Trainer(Seq2Seq(config, norm["std_floor"]), total_steps)
        progress = None

    session = TorchSession(
        config, trainer, windows, directory, norm, total_steps
    )
    if progress is None:
        progress = Progress()
        progress.best_val_mse = session.evaluate()["mse"]
        session.save(progress, progress.best_val_mse, due=True)
    progress = run_epochs(config, session, progress, run_dir, quiet)

    trainer, meta = restore_checkpoint(directory, "best")
    trainer.model.config = config
    return trainer.model, training_summary(config, progress, meta)


def forecaster(model: Seq2Seq) -> Forecaster:
    """The model's `generate` over windows, in batches of batch_size."""

    def forecast(contexts: np.ndarray, horizon: int) -> np.ndarray:
        return forecast_windows(
            model, contexts, horizon, model.config.batch_size
        )

    return forecast


def restore_best(checkpoint_dir: Path) -> tuple[Seq2Seq, dict[str, Any]]:
    """The best model of a run's folder or its `checkpoints/`, and its meta."""
    trainer, meta = restore_checkpoint(find_checkpoints(checkpoint_dir))
    return trainer.model, meta


TORCH = Framework(train, restore_best, forecaster)
