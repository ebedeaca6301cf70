"""Training, evaluation, generation and checkpoints of a Seq2Seq model."""

import contextlib
import functools
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh
from orbax.checkpoint import checkpoint_managers

import parallel
from config import Config, InputError
from Initializers import Seq2Seq, create_model

log = logging.getLogger(__name__)

Array = jax.Array
# context [B, in_len], target [B, out_len], mask [B]; inside the train
# step also use_truth [B, out_len], drawn there and split over devices
# with the rows.
Batch = dict[str, Array]

# Rows times LSTM units one forward and backward pass takes at most (128
# rows at hidden 64): a larger batch goes in passes, their losses and
# gradients summed. XLA keeps a program's temporaries in one block, and
# past 64 MB glibc maps such a block afresh at every call (on a thread
# other than the main one): at batch 512 and hidden 64, some 13,000 page
# faults a step.
PASS_SIZE = 8192


def teacher_forcing_ratio(config: Config, epoch: int) -> float:
    """Probability that a decoder step is fed the truth in `epoch` (1-based).

    Scheduled sampling: "always" is teacher forcing; "linear" starts at 1
    and falls by 1 / `tf_decay_epochs` (or 1 / `epochs`) an epoch down to
    `tf_min`; "inverse-sigmoid" is k / (k + exp((epoch - 1) / k)).
    """
    if config.teacher_forcing == "linear":
        span = config.tf_decay_epochs or config.epochs
        return max(config.tf_min, 1.0 - (epoch - 1) / max(span, 1))
    if config.teacher_forcing == "inverse-sigmoid":
        k = config.tf_k
        return k / (k + math.exp((epoch - 1) / k))
    return 1.0


@functools.partial(jax.jit, static_argnames="mesh")
def train_step(
    model: Seq2Seq,
    batch: Batch,
    key: Array,
    truth_ratio: Array = 1.0,
    mesh: Mesh | None = None,
) -> tuple[Seq2Seq, dict[str, Array]]:
    """One update of both states from one forward and backward pass.

    The arguments are those of `loss_and_grads`.
    """
    loss, grads = loss_and_grads(model, batch, key, truth_ratio, mesh)
    return model.apply_gradients(grads), {"loss": loss}


def loss_and_grads(
    model: Seq2Seq,
    batch: Batch,
    key: Array,
    truth_ratio: Array = 1.0,
    mesh: Mesh | None = None,
) -> tuple[Array, Any]:
    """The batch's mean squared error over its real windows, and its
    gradients with respect to the encoder's and the decoder's parameters.

    Each decoder step is fed the true previous value with probability
    `truth_ratio` and the model's own prediction otherwise; under the
    config's teacher forcing "always" every step is fed the truth and
    the ratio is not read. Pass it as a float32 array so that changing it
    per epoch does not recompile. Dropout and sampling keys come from
    `key` and the step.

    With a `mesh` of several devices, each device runs the forward and
    backward pass over its rows of the batch, sharded over the mesh, and
    the gradients are summed across devices once. The numbers are those
    of one device, to float rounding, but with dropout, whose masks (and
    so the run) depend on the device count. A batch (or a device's
    share) of more than `pass_rows(config)` rows goes in passes, one
    after another, with the same numbers to float rounding, dropout
    masks aside.
    """
    step_key = jax.random.fold_in(key, model.encoder.step)
    dropout_key, sampling_key = jax.random.split(step_key)
    if model.config.teacher_forcing != "always":
        use_truth = jax.random.bernoulli(
            sampling_key, truth_ratio, batch["target"].shape
        )
        batch = {**batch, "use_truth": use_truth}
    # The whole batch's count, on every device: the devices' shares of
    # the loss then sum to the batch's mean.
    window_count = jnp.maximum(jnp.sum(batch["mask"]), 1.0)
    split = mesh is not None and mesh.size > 1
    most_rows = pass_rows(model.config)

    def loss_and_grads_of(params, rows: Batch, key: Array):
        def loss_fn(params):
            prediction, target = model.with_params(params).teacher_forced(
                rows["context"],
                rows["target"],
                dropout_key=key,
                use_truth=rows.get("use_truth"),
            )
            per_window = jnp.mean((prediction - target) ** 2, axis=-1)
            return jnp.sum(per_window * rows["mask"]) / window_count

        return jax.value_and_grad(loss_fn)(params)

    def on_rows(params, rows: Batch):
        device_key = dropout_key
        if split:  # each device draws its own dropout masks
            index = jax.lax.axis_index(parallel.AXIS)
            device_key = jax.random.fold_in(dropout_key, index)
        return in_passes(loss_and_grads_of, params, rows, device_key, most_rows)

    if not split:
        return on_rows(model.params, batch)
    # Left to jit, the partitioner would sum the weight gradients across
    # devices inside the backward loops, once a time step.
    on_devices = parallel.sum_over_devices(on_rows, mesh)
    return on_devices(model.params, batch)


def pass_rows(config: Config) -> int:
    """The most rows of a batch that one pass of the train step takes."""
    return max(1, PASS_SIZE // config.decoder_hidden)


def in_passes(
    loss_and_grads_of: Callable, params, rows: Batch, key: Array, most: int
) -> tuple[Array, Any]:
    """`loss_and_grads_of(params, rows, key)` summed over passes of at most
    `most` rows, one after another; the last pass is padded with masked
    copies of the last row. Each pass folds its number into `key`.
    """
    count = rows["mask"].shape[0]
    passes = -(-count // most)
    if passes == 1:
        return loss_and_grads_of(params, rows, key)
    size = -(-count // passes)

    def cut(name, a):
        padding = jnp.zeros_like if name == "mask" else lambda a: a
        pad = jnp.repeat(padding(a[-1:]), passes * size - count, axis=0)
        return jnp.concatenate([a, pad]).reshape(passes, size, *a.shape[1:])

    parts = {name: cut(name, a) for name, a in rows.items()}

    def add(total, part):
        index, rows = part
        result = loss_and_grads_of(params, rows, jax.random.fold_in(key, index))
        return jax.tree.map(jnp.add, total, result), None

    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    total, _ = jax.lax.scan(add, zero, (jnp.arange(passes), parts))
    return total


class NonFiniteLossError(FloatingPointError):
    """A training loss came out NaN or infinite; the model is unusable."""


def train_epoch(
    model: Seq2Seq,
    loader: Iterable[Batch],
    key: Array,
    truth_ratio: float = 1.0,
    mesh: Mesh | None = None,
) -> tuple[Seq2Seq, float]:
    """Runs `train_step` over the loader; returns the mean batch loss.

    Raises NonFiniteLossError naming the first step whose loss was not
    finite (checked once at the end, so the loop never waits on a step).
    """
    first_step = int(model.encoder.step)
    ratio = jnp.float32(truth_ratio)
    losses = []
    for batch in loader:
        model, metrics = train_step(model, batch, key, ratio, mesh=mesh)
        losses.append(metrics["loss"])
    if not losses:
        return model, 0.0
    losses = np.asarray(jnp.stack(losses))
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise NonFiniteLossError(
            f"step {first_step + bad[0] + 1}: training loss is {losses[bad[0]]}"
        )
    return model, float(losses.mean())


@functools.partial(jax.jit, static_argnums=2)
def generate(model: Seq2Seq, context: Array, horizon: int) -> Array:
    """Free-running forecasts [batch, horizon] after context [batch, in_len].

    Runs as one `lax.scan` (see `Seq2Seq.generate`).
    """
    return model.generate(context, horizon)


@functools.partial(jax.jit, static_argnums=2)
def generate_batches(model: Seq2Seq, contexts: Array, horizon: int) -> Array:
    """`generate` over batches of windows [n, batch, in_len] -> forecasts
    [n, batch, horizon], one batch after another in one call."""
    return jax.lax.map(lambda batch: model.generate(batch, horizon), contexts)


def forecast_windows(
    model: Seq2Seq, contexts: np.ndarray, horizon: int, batch_size: int
) -> np.ndarray:
    """`generate` over many windows [n, in_len] -> [n, horizon], numpy.

    Windows go in batches of `batch_size`, the last one padded, all in
    one call of `generate_batches` (compiled once for each number of
    batches and horizon).
    """
    count = len(contexts)
    if count == 0:
        raise ValueError("forecast_windows: no windows to forecast")
    batches = math.ceil(count / batch_size)
    pad = np.repeat(contexts[-1:], batches * batch_size - count, axis=0)
    padded = np.concatenate([contexts, pad]).reshape(batches, batch_size, -1)
    # Handed to jit as numpy: placing it first (jnp.asarray) cost 3-10%.
    padded = padded.astype(np.float32, copy=False)
    forecasts = generate_batches(model, padded, horizon)
    return np.asarray(forecasts).reshape(-1, horizon)[:count]


@jax.jit
def eval_step(model: Seq2Seq, batch: Batch) -> dict[str, Array]:
    """Per-window errors of a batch, padded rows included (mask them out).

    `loss` is the teacher-forced MSE in normalized units; `mse` and `mae`
    are of free-running forecasts, in the series' units.
    """
    prediction, target = model.teacher_forced(batch["context"], batch["target"])
    forecast = model.generate(batch["context"], batch["target"].shape[1])
    error = forecast - batch["target"]
    return {
        "loss": jnp.mean((prediction - target) ** 2, axis=-1),
        "mse": jnp.mean(error**2, axis=-1),
        "mae": jnp.mean(jnp.abs(error), axis=-1),
        "forecast": forecast,
    }


def evaluate(model: Seq2Seq, loader: Iterable[Batch]) -> dict[str, Any]:
    """Mean errors over every window of the loader, and the forecasts.

    Returns `loss`, `mse`, `mae` (floats) and `forecasts`, a numpy array
    [windows, out_len] in the loader's order.
    """
    sums = {"loss": 0.0, "mse": 0.0, "mae": 0.0}
    forecasts, count = [], 0
    for batch in loader:
        out = eval_step(model, batch)
        real = np.asarray(batch["mask"]) > 0
        for name in sums:
            sums[name] += float(np.asarray(out[name])[real].sum())
        forecasts.append(np.asarray(out["forecast"])[real])
        count += int(real.sum())
    metrics = {name: total / max(count, 1) for name, total in sums.items()}
    metrics["forecasts"] = np.concatenate(forecasts) if forecasts else None
    return metrics


# ---------------------------------------------------------------------------
# Checkpoints: both states, the config and the normalization statistics.


def make_checkpoint_manager(
    directory: Path, read_only: bool = False
) -> ocp.CheckpointManager:
    """Keeps the latest checkpoint and the one of lowest validation MSE."""
    policy = checkpoint_managers.AnyPreservationPolicy(
        [
            checkpoint_managers.LatestN(1),
            checkpoint_managers.BestN(
                get_metric_fn=_val_mse, reverse=True, n=1
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        best_fn=_val_mse,
        best_mode="min",
        preservation_policy=policy,
        read_only=read_only,
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def _val_mse(metrics: dict[str, float]) -> float:
    return metrics["val_mse"]


# Orbax numbers its saves process-wide, and two saves under way at once in
# runs trained side by side (in threads) mix them up. So one save at a time
# is under way: the next save, in any run, waits for it. Restores wait too,
# as orbax says nothing of reading while another save writes.
_orbax_lock = threading.Lock()
_saving: ocp.CheckpointManager | None = None


@contextlib.contextmanager
def _orbax_turn() -> Iterator[None]:
    global _saving
    with _orbax_lock:
        saving, _saving = _saving, None
        if saving is not None:
            try:
                saving.wait_until_finished()
            except Exception as error:
                # Its own run raises this when it next waits for its saves.
                log.warning("%s: a save failed (%s)", saving.directory, error)
        yield


def save_checkpoint(
    manager: ocp.CheckpointManager,
    epoch: int,
    model: Seq2Seq,
    *,
    norm: dict[str, float],
    meta: dict[str, Any],
) -> None:
    """Saves the model after `epoch`, asynchronously.

    `meta` must hold `val_mse`, by which the best checkpoint is kept, and
    `total_steps`, the length of the learning-rate schedule.
    """
    global _saving
    with _orbax_turn():
        _saving = manager
        manager.save(
            epoch,
            args=ocp.args.Composite(
                encoder=ocp.args.StandardSave(model.encoder),
                decoder=ocp.args.StandardSave(model.decoder),
                config=ocp.args.JsonSave(model.config.to_json()),
                norm=ocp.args.JsonSave(norm),
                meta=ocp.args.JsonSave({"epoch": epoch, **meta}),
            ),
            metrics={"val_mse": meta["val_mse"]},
        )


def open_checkpoints(directory: Path) -> ocp.CheckpointManager:
    """A read-only manager of a run's folder or of its `checkpoints/`."""
    directory = Path(directory)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        raise InputError(f"{directory}: no such checkpoint directory")
    return make_checkpoint_manager(directory, read_only=True)


def _restore_step(
    manager: ocp.CheckpointManager, step: int
) -> tuple[Seq2Seq, dict[str, Any]]:
    json_items = manager.restore(
        step,
        args=ocp.args.Composite(
            config=ocp.args.JsonRestore(),
            norm=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ),
    )
    config = Config.from_json(json_items.config)
    norm, meta = json_items.norm, json_items.meta
    # Shapes only: no parameters are drawn just to be overwritten. The
    # arrays come back on this process's first device, whatever the
    # device layout they were saved from; callers place them after.
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    template = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(
            leaf.shape, leaf.dtype, sharding=here
        ),
        jax.eval_shape(
            lambda: create_model(
                config,
                jax.random.PRNGKey(0),
                meta["total_steps"],
                norm["std_floor"],
            )
        ),
    )
    states = manager.restore(
        step,
        args=ocp.args.Composite(
            encoder=ocp.args.StandardRestore(template.encoder),
            decoder=ocp.args.StandardRestore(template.decoder),
        ),
    )
    model = template.replace(encoder=states.encoder, decoder=states.decoder)
    return model, {**meta, "norm": norm, "config": json_items.config}


class NoCompleteCheckpointError(InputError):
    """No step of a checkpoint directory could be read."""

    def __init__(self, message: str, damaged: list[int]):
        super().__init__(message)
        self.damaged = damaged


def _val_mse_or_inf(manager: ocp.CheckpointManager, step: int) -> float:
    try:
        return _val_mse(manager.metrics(step))
    except Exception:  # unreadable metrics: a damaged step, tried last
        return math.inf


def restore_checkpoint(
    manager: ocp.CheckpointManager, which: str = "best"
) -> tuple[Seq2Seq, dict[str, Any]]:
    """Rebuilds the model from what the checkpoint holds, and nothing else.

    A step that cannot be read (missing or truncated files) is skipped with
    a warning naming it, for the next latest or next best; so are the
    temporary folders of saves that never finished.

    Args:
      manager: from `open_checkpoints` or `make_checkpoint_manager`.
      which: "best" (lowest validation MSE) or "latest".

    Returns:
      The model and the checkpoint's metadata: `epoch`, `norm`, `config`
      (as JSON), what `save_checkpoint` was given as `meta`, and
      `damaged`, the steps skipped.
    """
    for unfinished in Path(manager.directory).glob("*.orbax-checkpoint-tmp*"):
        log.warning("%s: an unfinished save, skipped", unfinished)
    steps = sorted(manager.all_steps(), reverse=True)
    if which == "best":
        steps.sort(key=lambda step: _val_mse_or_inf(manager, step))
    damaged = []
    for step in steps:
        try:
            with _orbax_turn():
                model, meta = _restore_step(manager, step)
        except Exception as error:  # any failure to read marks it damaged
            reason = str(error).splitlines()[0][:160]
            log.warning(
                "%s: incomplete or damaged, skipped (%s)",
                Path(manager.directory) / str(step),
                reason,
            )
            damaged.append(step)
            continue
        return model, {**meta, "damaged": damaged}
    raise NoCompleteCheckpointError(
        f"{manager.directory}: holds no complete checkpoint", damaged
    )
