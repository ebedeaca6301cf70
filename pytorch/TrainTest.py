"""Training, evaluation, generation and checkpoints of the torch twin."""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from config import Config, InputError
from files import replace_atomically
from Initializers import make_schedule
from pytorch.Dataloader import Batch
from pytorch.Models import Seq2Seq


class Trainer:
    """The optimizer and learning-rate schedule of one model.

    Adam on `Initializers.make_schedule`, as the JAX side. The JAX side
    clips the encoder's and the decoder's gradients each by its own global
    norm, since they are two TrainStates, and so does this.
    """

    def __init__(self, model: Seq2Seq, total_steps: int):
        config = model.config
        self.model = model
        self.groups = (
            list(model.encoder.parameters()),
            [*model.decoder.parameters(), *model.head.parameters()],
        )
        self.optimizer = torch.optim.Adam(model.parameters(), config.lr)
        rate = make_schedule(config, total_steps)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: float(rate(step)) / config.lr
        )

    @property
    def lr(self) -> float:
        """The rate of the next step."""
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])


def _masked_mean(per_window: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.sum(per_window * mask) / torch.clamp(torch.sum(mask), min=1.0)


def train_step(
    trainer: Trainer, batch: Batch, truth_ratio: float = 1.0
) -> float:
    """One update from one forward and backward pass; returns the loss.

    Each decoder step is fed the true previous value with probability
    `truth_ratio` and the model's own prediction otherwise; 1 is teacher
    forcing.
    """
    model = trainer.model
    model.train()
    use_truth = None
    if truth_ratio < 1:
        use_truth = torch.rand(batch["target"].shape) < truth_ratio
    prediction, target = model.teacher_forced(
        batch["context"], batch["target"], use_truth=use_truth
    )
    per_window = torch.mean((prediction - target) ** 2, dim=-1)
    loss = _masked_mean(per_window, batch["mask"])

    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if model.config.clip_norm > 0:
        for group in trainer.groups:
            torch.nn.utils.clip_grad_norm_(group, model.config.clip_norm)
    trainer.optimizer.step()
    trainer.schedule.step()
    return loss.item()


def train_epoch(
    trainer: Trainer, loader: Iterable[Batch], truth_ratio: float = 1.0
) -> float:
    """Runs `train_step` over the loader; returns the mean batch loss."""
    losses = [train_step(trainer, batch, truth_ratio) for batch in loader]
    return float(np.mean(losses)) if losses else 0.0


@torch.no_grad()
def generate(model: Seq2Seq, context: torch.Tensor, horizon: int):
    """Free-running forecasts [batch, horizon] after context [batch, in_len]."""
    model.eval()
    return model.generate(context, horizon)


def forecast_windows(
    model: Seq2Seq, contexts: np.ndarray, horizon: int, batch_size: int
) -> np.ndarray:
    """`generate` over many windows [n, in_len] -> [n, horizon], numpy."""
    contexts = torch.as_tensor(np.asarray(contexts, np.float32))
    outputs = [
        generate(model, batch, horizon).numpy()
        for batch in contexts.split(batch_size)
    ]
    return np.concatenate(outputs)


@torch.no_grad()
def evaluate(model: Seq2Seq, loader: Iterable[Batch]) -> dict[str, Any]:
    """Mean errors over every window of the loader, and the forecasts.

    `loss` is the teacher-forced MSE in normalized units; `mse` and `mae`
    are of free-running forecasts in the series' units. `forecasts` is
    numpy [windows, out_len] in the loader's order.
    """
    model.eval()
    sums = {"loss": 0.0, "mse": 0.0, "mae": 0.0}
    forecasts, count = [], 0
    for batch in loader:
        real = batch["mask"] > 0
        context, target = batch["context"][real], batch["target"][real]
        prediction, normalized = model.teacher_forced(context, target)
        forecast = model.generate(context, target.shape[1])
        error = forecast - target
        sums["loss"] += (
            torch.mean((prediction - normalized) ** 2, -1).sum().item()
        )
        sums["mse"] += torch.mean(error**2, dim=-1).sum().item()
        sums["mae"] += torch.mean(error.abs(), dim=-1).sum().item()
        forecasts.append(forecast.numpy())
        count += len(context)
    metrics = {name: total / max(count, 1) for name, total in sums.items()}
    metrics["forecasts"] = np.concatenate(forecasts) if forecasts else None
    return metrics


# ---------------------------------------------------------------------------
# Checkpoints: checkpoints/{latest,best}.pt hold the weights and optimizer
# state, {latest,best}.json the config, normalization and metadata.


def save_checkpoint(
    directory: Path,
    which: str,
    trainer: Trainer,
    *,
    epoch: int,
    norm: dict[str, float],
    meta: dict[str, Any],
) -> None:
    """Writes `which` ("latest" or "best") after `epoch` into `directory`.

    `meta` must hold `val_mse` and `total_steps`, the length of the
    learning-rate schedule.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "epoch": epoch,
        "model": trainer.model.state_dict(),
        **trainer.state_dict(),
    }
    replace_atomically(
        directory / f"{which}.pt", lambda path: torch.save(state, path)
    )
    info = {
        "config": trainer.model.config.to_json(),
        "norm": norm,
        "meta": {"epoch": epoch, **meta},
    }
    text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    replace_atomically(
        directory / f"{which}.json", lambda p: p.write_text(text)
    )


def find_checkpoints(directory: Path) -> Path:
    """The checkpoint directory of a run directory, or itself."""
    directory = Path(directory)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        raise InputError(f"{directory}: no such checkpoint directory")
    return directory


def has_checkpoint(directory: Path, which: str = "latest") -> bool:
    return (Path(directory) / f"{which}.json").is_file()


def restore_checkpoint(
    directory: Path, which: str = "best"
) -> tuple[Trainer, dict[str, Any]]:
    """Rebuilds the model and its optimizer from the checkpoint alone.

    Returns the trainer (its `model` in eval mode) and the metadata:
    `epoch`, `norm` and what `save_checkpoint` was given as `meta`.
    """
    directory = Path(directory)
    info_path, state_path = (
        directory / f"{which}.json",
        directory / f"{which}.pt",
    )
    if not info_path.is_file() or not state_path.is_file():
        raise InputError(f"{directory}: holds no {which} checkpoint")
    try:
        info = json.loads(info_path.read_text())
        config = Config.from_json(info["config"])
        norm, meta = info["norm"], info["meta"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(f"{info_path}: not a checkpoint ({error})") from None
    state = torch.load(state_path, weights_only=True)
    # The two files are renamed one after the other; a crash in between
    # leaves a pair from two epochs.
    if state["epoch"] != meta["epoch"]:
        raise InputError(
            f"{directory}: {which}.pt is of epoch {state['epoch']}, "
            f"{which}.json of epoch {meta['epoch']}"
        )

    model = Seq2Seq(config, norm["std_floor"])
    model.load_state_dict(state["model"])
    trainer = Trainer(model, meta["total_steps"])
    trainer.load_state_dict(state)
    model.eval()
    return trainer, {**meta, "norm": norm, "config": info["config"]}
