"""Loaders of the shared windows as batches of float32 torch tensors."""

from collections.abc import Iterator

import torch

from Dataloader import JaxLoader, WindowDataset, make_loader

# context [B, in_len], target [B, out_len], mask [B]
Batch = dict[str, torch.Tensor]


class TorchLoader:
    """The JAX side's loader, yielding torch tensors instead of jax arrays.

    Batching, padding, masks and the shuffled order for a (seed, epoch) are
    the JAX loader's own, so both sides see the same batches.
    """

    def __init__(self, loader: JaxLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader.numpy_batches():
            yield {name: torch.from_numpy(a) for name, a in batch.items()}


def make_torch_loader(
    dataset: WindowDataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
) -> TorchLoader:
    """Returns a loader of fixed-shape tensor batches; see `make_loader`."""
    return TorchLoader(
        make_loader(
            dataset,
            batch_size,
            train=train,
            seed=seed,
            num_workers=num_workers,
        )
    )
