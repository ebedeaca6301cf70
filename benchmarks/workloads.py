"""What is measured: sine windows, and the models of both frameworks."""

import dataclasses
import functools

import jax
import numpy as np
import torch

from config import Config
from Dataloader import WindowDataset, make_loader
from experiment import (
    fit_normalization,
    load_splits,
    make_windows,
    steps_per_epoch,
)
from Initializers import Seq2Seq, create_model
from pytorch.Dataloader import make_torch_loader
from pytorch.Models import Seq2Seq as TorchSeq2Seq
from pytorch.TrainTest import Trainer

# Read at import, before any benchmark changes it.
DEFAULT_TORCH_THREADS = torch.get_num_threads()


def torch_thread_counts() -> tuple[int, ...]:
    """One thread, as the twin's RUN.py sets, and torch's own default."""
    return tuple(sorted({1, DEFAULT_TORCH_THREADS}))


def torch_name(threads: int) -> str:
    return f"torch_{threads}t"


def make_config(batch: int, hidden: int, encoder: str) -> Config:
    """RUN.py's defaults but for these; a bi encoder merges by sum."""
    return Config(
        dataset="sine",
        batch_size=batch,
        hidden=hidden,
        encoder=encoder,
        merge="sum",
    )


@dataclasses.dataclass(frozen=True)
class Workload:
    """The sine windows of one config, and the schedule a run would use."""

    config: Config
    windows: dict[str, WindowDataset]
    std_floor: float
    total_steps: int


@functools.cache
def _sine_splits(test_fraction: float, val_fraction: float):
    return load_splits(
        Config(test_fraction=test_fraction, val_fraction=val_fraction)
    )


def load_workload(config: Config) -> Workload:
    splits = _sine_splits(config.test_fraction, config.val_fraction)
    windows = make_windows(config, splits)
    total_steps = config.epochs * steps_per_epoch(config, windows)
    std_floor = fit_normalization(splits)["std_floor"]
    return Workload(config, windows, std_floor, total_steps)


def with_kernel(work: Workload, kernel: str) -> Workload:
    """The same workload with the LSTM layers run by `kernel`."""
    return dataclasses.replace(work, config=work.config.replace(kernel=kernel))


def create_jax_model(work: Workload, seed: int = 0) -> Seq2Seq:
    key = jax.random.PRNGKey(seed)
    return create_model(work.config, key, work.total_steps, work.std_floor)


def create_torch_trainer(work: Workload, seed: int = 0) -> Trainer:
    torch.manual_seed(seed)
    model = TorchSeq2Seq(work.config, work.std_floor)
    return Trainer(model, work.total_steps)


def training_batches(work: Workload) -> tuple[list, list]:
    """One epoch's batches, as jax arrays and as the same torch tensors.

    Both loaders shuffle by the same seed, so batch i holds the same
    windows on both sides.
    """
    options = {"train": True, "seed": work.config.seed}
    size, train = work.config.batch_size, work.windows["train"]
    jax_batches = list(make_loader(train, size, **options))
    torch_batches = list(make_torch_loader(train, size, **options))
    for a, b in zip(jax_batches, torch_batches, strict=True):
        np.testing.assert_array_equal(a["context"], b["context"].numpy())
    return jax_batches, torch_batches


def window_contexts(work: Workload) -> np.ndarray:
    """Every test window's context, float32 [windows, in_len]."""
    return work.windows["test"].contexts()
