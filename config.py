"""The run configuration: one frozen dataclass, saved with every run."""

import dataclasses
from typing import Any

TOY_DATASETS = ("sine", "linear")
ENCODERS = ("uni", "bi")
MERGES = ("concat", "sum", "mean", "max")


class InputError(ValueError):
    """A problem the user can fix: a bad file or flag value.

    The message names the file or flag and the problem in one line.
    """


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything needed to rebuild a run from its directory."""

    # Data.
    dataset: str = "sine"  # "sine", "linear", or a path to a series file
    in_len: int = 40  # input window length, in samples
    out_len: int = 20  # forecast length the decoder is trained on
    stride: int = 1  # step between consecutive windows
    val_fraction: float = 0.2  # last part of the training range, by time
    test_fraction: float = 0.2  # last part of a series file, by time

    # Model.
    encoder: str = "uni"  # "uni" or "bi"
    merge: str = "sum"  # how a bi encoder merges directions
    hidden: int = 64  # LSTM units per layer (per direction)
    layers: int = 1  # LSTM layers in the encoder and in the decoder
    dropout: float = 0.0  # between encoder layers, training only

    # Training.
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-2  # initial rate of the cosine decay
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes
    checkpoint_every: int = 10  # epochs between saves; improvements always

    def __post_init__(self):
        _check_config(self)

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise InputError(f"config: unknown fields {unknown}")
        return cls(**fields)

    @property
    def decoder_hidden(self) -> int:
        """Decoder width: it takes the merged encoder carry as it is."""
        both = self.encoder == "bi" and self.merge == "concat"
        return 2 * self.hidden if both else self.hidden


def _check_config(config: Config) -> None:
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    positive = ("in_len", "out_len", "stride", "hidden", "layers")
    for name in (*positive, "checkpoint_every"):
        if getattr(config, name) < 1:
            raise InputError(f"{flag(name)}: must be at least 1")
    if config.epochs < 0:
        raise InputError("--epochs: must not be negative")
    if config.batch_size < 1:
        raise InputError("--batch-size: must be at least 1")
    if config.num_workers < 0:
        raise InputError("--num-workers: must not be negative")
    if not config.lr > 0:
        raise InputError("--lr: must be positive")
    if not 0 <= config.dropout < 1:
        raise InputError("--dropout: must be in [0, 1)")
    for name in ("val_fraction", "test_fraction"):
        if not 0 < getattr(config, name) < 1:
            raise InputError(f"{flag(name)}: must be in (0, 1)")
    if config.encoder not in ENCODERS:
        raise InputError(f"--encoder: must be one of {', '.join(ENCODERS)}")
    if config.merge not in MERGES:
        raise InputError(f"--merge: must be one of {', '.join(MERGES)}")
