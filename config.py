"""The run configuration: one frozen dataclass, saved with every run."""

import dataclasses
import math
from typing import Any

TOY_DATASETS = ("sine", "linear")


class InputError(ValueError):
    """A problem the user can fix: a bad file or flag value.

    The message names the file or flag and the problem in one line.
    """


def _field(default: Any, help: str, choices: tuple[str, ...] = ()):
    # The help text doubles as the field's comment and its flag's --help.
    return dataclasses.field(
        default=default, metadata={"help": help, "choices": choices}
    )


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything needed to rebuild a run from its directory."""

    # Data.
    dataset: str = _field("sine", "sine, linear, or a series file's path")
    in_len: int = _field(40, "input window length, in samples")
    out_len: int = _field(20, "forecast length the decoder is trained on")
    stride: int = _field(1, "step between consecutive windows")
    val_fraction: float = _field(0.2, "validation: end of the training range")
    test_fraction: float = _field(0.2, "test: end of a series file, by time")
    season: int = _field(0, "seasonal-naive period in samples; 0: estimate")
    time_column: str = _field(
        "",
        "a series file's time column (numbers or ISO dates); "
        "empty: t, else the first",
    )
    value_column: str = _field(
        "", "a series file's value column; empty: y, else the next numeric"
    )
    fill: str = _field(
        "none",
        "missing time steps of a series file: an error, or filled by linear "
        "interpolation or with the previous value",
        ("none", "linear", "previous"),
    )

    # Model.
    encoder: str = _field("uni", "LSTM encoder direction", ("uni", "bi"))
    merge: str = _field(
        "sum",
        "how a bidirectional encoder merges its directions",
        ("concat", "sum", "mean", "max"),
    )
    hidden: int = _field(64, "LSTM units per layer (per direction)")
    layers: int = _field(1, "LSTM layers in the encoder and in the decoder")
    dropout: float = _field(0.0, "dropout between encoder layers")
    kernel: str = _field(
        "fused",
        "how LSTM layers run over a sequence on the CPU: one compiled C++ "
        "call (falls back to scan where it cannot build), or XLA's scan",
        ("fused", "scan"),
    )

    # Training.
    epochs: int = _field(100, "training epochs")
    batch_size: int = _field(32, "windows per batch")
    lr: float = _field(1e-2, "peak learning rate")
    lr_schedule: str = _field(
        "cosine",
        "learning-rate schedule; warmup takes the first 5%% of steps",
        ("constant", "cosine", "warmup-cosine"),
    )
    clip_norm: float = _field(
        1.0, "clip encoder and decoder gradients each to this norm; 0: off"
    )
    teacher_forcing: str = _field(
        "always",
        "probability of feeding the decoder the truth, by epoch",
        ("always", "linear", "inverse-sigmoid"),
    )
    tf_min: float = _field(0.0, "the floor of the linear teacher forcing")
    tf_decay_epochs: int = _field(
        0, "linear: the ratio falls by 1/this per epoch; 0: by 1/epochs"
    )
    tf_k: float = _field(
        10.0, "inverse sigmoid: k / (k + exp((epoch - 1) / k))"
    )
    patience: int = _field(0, "stop after this many epochs without a new best")
    seed: int = _field(0, "random seed: the same seed, the same numbers")
    num_workers: int = _field(0, "DataLoader worker processes")
    devices: int = _field(0, "devices to split each batch over; 0: all")
    checkpoint_every: int = _field(25, "epochs between checkpoints")

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


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _check_config(config: Config) -> None:
    def require(ok: bool, field: str, problem: str) -> None:
        if not ok:
            raise InputError(f"{flag_name(field)}: {problem}")

    for field in dataclasses.fields(config):
        value, choices = getattr(config, field.name), field.metadata["choices"]
        if choices:
            require(value in choices, field.name, f"must be one of {choices}")
    for name in (
        "in_len",
        "out_len",
        "stride",
        "hidden",
        "layers",
        "batch_size",
        "checkpoint_every",
    ):
        require(getattr(config, name) >= 1, name, "must be at least 1")
    for name in (
        "epochs",
        "season",
        "patience",
        "num_workers",
        "devices",
        "tf_decay_epochs",
        "clip_norm",
    ):
        require(getattr(config, name) >= 0, name, "must not be negative")
    require(0 < config.lr < math.inf, "lr", "must be positive and finite")
    require(0 <= config.dropout < 1, "dropout", "must be in [0, 1)")
    require(0 < config.val_fraction < 1, "val_fraction", "must be in (0, 1)")
    require(0 < config.test_fraction < 1, "test_fraction", "must be in (0, 1)")
    require(0 <= config.tf_min <= 1, "tf_min", "must be in [0, 1]")
    require(config.tf_k >= 1, "tf_k", "must be at least 1")
    # The seasonal-naive baseline repeats the window's last season.
    require(
        config.season <= config.in_len, "season", "must not exceed --in-len"
    )
