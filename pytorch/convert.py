"""Flax parameters of the JAX forecaster as the torch twin's weights."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from config import Config
from pytorch.Models import Seq2Seq
from TrainTest import open_checkpoints, restore_checkpoint

Params = Mapping[str, Any]  # a Flax parameter tree of host arrays
GATES = ("i", "f", "g", "o")  # torch's order of the four gate blocks


def convert_cell(cell: Params, suffix: str) -> dict[str, torch.Tensor]:
    """One OptimizedLSTMCell -> nn.LSTM tensors named with `suffix`.

    Flax keeps a kernel [in, hidden] per gate for the input (ii, if, ig, io)
    and one [hidden, hidden] with a bias for the hidden state (hi, ...);
    torch stacks the gates as rows of [4 * hidden, in] and adds two biases,
    so the input bias is zero.
    """

    def stack(prefix: str, leaf: str) -> np.ndarray:
        return np.concatenate(
            [np.asarray(cell[prefix + gate][leaf]) for gate in GATES], axis=-1
        )

    bias = stack("h", "bias")
    return {
        f"weight_ih_{suffix}": _tensor(stack("i", "kernel").T),
        f"weight_hh_{suffix}": _tensor(stack("h", "kernel").T),
        f"bias_ih_{suffix}": _tensor(np.zeros_like(bias)),
        f"bias_hh_{suffix}": _tensor(bias),
    }


def _tensor(array: Any) -> torch.Tensor:
    # A copy: arrays restored by JAX can be read-only.
    return torch.tensor(np.asarray(array, np.float32))


def convert_params(
    config: Config, encoder: Params, decoder: Params
) -> dict[str, torch.Tensor]:
    """The JAX model's (encoder, decoder) params -> a Seq2Seq state_dict."""
    state = {}
    for k in range(config.layers):
        layer = encoder[f"lstm_{k}"]
        if config.encoder == "bi":
            cells = {"l0": layer["forward"], "l0_reverse": layer["backward"]}
        else:
            cells = {"l0": layer["OptimizedLSTMCell_0"]}
        for suffix, cell in cells.items():
            for name, value in convert_cell(cell, suffix).items():
                state[f"encoder.{k}.{name}"] = value

    for k in range(config.layers):
        for name, value in convert_cell(decoder[f"lstm_{k}"], f"l{k}").items():
            state[f"decoder.{name}"] = value

    state["head.weight"] = _tensor(np.asarray(decoder["head"]["kernel"]).T)
    state["head.bias"] = _tensor(decoder["head"]["bias"])
    return state


def load_jax_model(jax_model) -> Seq2Seq:
    """The torch twin of an `Initializers.Seq2Seq`, with its weights."""
    model = Seq2Seq(jax_model.config, jax_model.std_floor)
    encoder, decoder = jax_model.params
    state = convert_params(jax_model.config, encoder, decoder)
    # strict: a parameter on either side without a partner is a bug here.
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_jax_checkpoint(
    directory: Path, which: str = "best"
) -> tuple[Seq2Seq, dict[str, Any]]:
    """The torch twin of a JAX run's checkpoint, and its metadata.

    `directory` is a run or checkpoint directory of the JAX side; `which`
    is "best" or "latest", as for `TrainTest.restore_checkpoint`.
    """
    manager = open_checkpoints(directory)
    try:
        jax_model, meta = restore_checkpoint(manager, which)
    finally:
        manager.close()
    return load_jax_model(jax_model), meta
