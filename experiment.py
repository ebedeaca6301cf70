"""One run on one series: train, keep checkpoints, forecast, measure, plot."""

import contextlib
import dataclasses
import functools
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any, Protocol, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from tensorboardX import SummaryWriter
from tqdm import tqdm

import metrics
import parallel
import plots
from config import Config, InputError
from Dataloader import (
    Splits,
    WindowDataset,
    check_windows,
    load_dataset,
    make_loader,
)
from files import write_json
from Initializers import Seq2Seq, create_model, make_schedule
from TrainTest import (
    NoCompleteCheckpointError,
    NonFiniteLossError,
    evaluate,
    forecast_windows,
    make_checkpoint_manager,
    open_checkpoints,
    restore_checkpoint,
    save_checkpoint,
    teacher_forcing_ratio,
    train_epoch,
)

log = logging.getLogger(__name__)

# Set when runs going on in other threads are to stop (see `run_in_threads`).
STOP = threading.Event()


class Stopped(Exception):
    """A run stopped before its next epoch because STOP was set."""


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
        # Kept with the checkpoint to show the scale the floor came from.
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


# Fields that change how a run is carried out, not what it computes.
NOT_COMPARED = ("num_workers", "checkpoint_every", "devices", "kernel")


def check_same_config(directory: Path, config: Config, saved: Config) -> None:
    """Refuses to resume a saved run of another configuration.

    The message names every field that differs, worker count and the
    like aside.
    """
    ours, theirs = config.to_json(), saved.to_json()
    differences = [
        f"{name}: {ours[name]!r} asked for, {theirs[name]!r} saved"
        for name in ours
        if name not in NOT_COMPARED and ours[name] != theirs[name]
    ]
    if differences:
        raise InputError(
            f"{directory}: holds a run with another configuration "
            f"({'; '.join(differences)}); choose another --workdir, or "
            "--overwrite"
        )


class EpochLog:
    """Where each epoch's numbers go: TensorBoard, and a bar or log lines.

    The bar (tqdm) is shown on a terminal, plain log lines otherwise, and
    neither when `quiet`. TensorBoard event files go to `directory`.
    """

    def __init__(self, directory: Path, config: Config, progress, quiet: bool):
        # A resumed run writes again the epochs after its last checkpoint:
        # purge_step drops the events the killed run left for them.
        self.writer = SummaryWriter(
            str(directory),
            purge_step=progress.epoch + 1 if progress.epoch else None,
        )
        self.config = config
        self.bar = tqdm(
            total=config.epochs,
            initial=progress.epoch,
            desc=dataset_name(config.dataset),
            unit="epoch",
            disable=quiet or not sys.stderr.isatty(),
        )
        self.lines = not quiet and self.bar.disable

    def epoch(self, epoch: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, epoch)
        self.bar.set_postfix(
            loss=f"{scalars['train/loss']:.2e}",
            val_mse=f"{scalars['val/free_running_mse']:.2e}",
        )
        self.bar.update()
        if self.lines:
            log.info(
                "%s epoch %d/%d  train loss %.3e  val loss %.3e  "
                "val free-running mse %.3e",
                dataset_name(self.config.dataset),
                epoch,
                self.config.epochs,
                scalars["train/loss"],
                scalars["val/loss"],
                scalars["val/free_running_mse"],
            )

    def figure(self, epoch: int, figure) -> None:
        self.writer.add_figure("val/example_forecast", figure, epoch)

    def close(self, best_val_mse: float) -> None:
        """Writes the hyperparameters with the result they led to."""
        self.writer.add_hparams(
            self.config.to_json(),
            {"hparam/best_val_free_running_mse": best_val_mse},
            name="hparams",
        )
        self.writer.close()
        self.bar.close()


def val_example_figure(windows: WindowDataset, forecasts: np.ndarray):
    """The figure of one validation window's free-running forecast."""
    k = len(windows) // 2
    start = windows.starts[k]
    return plots.example_figure(
        windows.series.t[start : start + windows.in_len],
        windows.contexts()[k],
        windows.target_times(k),
        windows.targets()[k],
        forecasts[k],
        "validation window",
    )


@dataclasses.dataclass
class Progress:
    """Where training stands; every checkpoint's metadata holds it."""

    epoch: int = 0
    seconds: float = 0.0
    best_val_mse: float = math.inf
    best_epoch: int = 0  # the latest epoch to reach best_val_mse
    improved_epoch: int = 0  # the latest epoch to lower it
    stopped: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def checkpoint_meta(
        self, val_mse: float, total_steps: int
    ) -> dict[str, Any]:
        """What a checkpoint's metadata holds: this, the epoch's validation
        MSE and the length of the learning-rate schedule."""
        return {
            **self.to_json(),
            "val_mse": val_mse,
            "total_steps": total_steps,
        }

    @classmethod
    def from_json(cls, meta: dict[str, Any]) -> "Progress":
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in meta.items() if k in names})


def move_aside(manager, steps: list[int]) -> None:
    """Renames damaged steps (never deletes them) out of the way of the
    steps to come."""
    for step in steps:
        folder = Path(manager.directory) / str(step)
        folder.rename(folder.with_name(f"{step}.damaged-{time.time_ns()}"))
    if steps:
        manager.reload()


def start_or_resume(
    config: Config, manager, create: Callable[[], Seq2Seq], overwrite: bool
) -> tuple[Seq2Seq, Progress]:
    """The latest checkpoint's model and progress, or `create()`'s and none.

    A checkpoint of another configuration is refused, naming every field
    that differs, unless `overwrite`: then the saved steps are deleted
    (and only they) and training starts afresh.
    """
    if overwrite:
        for step in manager.all_steps():
            manager.delete(step)
    if manager.latest_step() is None:
        return create(), Progress()
    try:
        model, meta = restore_checkpoint(manager, "latest")
    except NoCompleteCheckpointError as error:
        move_aside(manager, error.damaged)
        log.warning("%s: starting afresh", manager.directory)
        return create(), Progress()
    move_aside(manager, meta["damaged"])
    check_same_config(manager.directory, config, model.config)
    progress = Progress.from_json(meta)
    finished = progress.stopped or progress.epoch >= config.epochs
    where = (manager.directory, progress.epoch)
    if finished:
        log.info("%s: trained to epoch %d; evaluating only", *where)
    else:
        log.info("%s: resuming after epoch %d", *where)
    return model.replace(config=config), progress


class Session(Protocol):
    """What the epoch loop needs of a model in training, in any framework."""

    val_windows: WindowDataset

    def learning_rate(self) -> float: ...

    def train_epoch(self, epoch: int, truth_ratio: float) -> float:
        """Trains one epoch (1-based); returns the mean loss."""

    def evaluate(self) -> dict[str, Any]:
        """Validation `loss`, `mse` (free-running) and `forecasts`."""

    def save(self, progress: Progress, val_mse: float, due: bool) -> None:
        """Checkpoints this epoch: a new best, or `due` (every
        `checkpoint_every` epochs and the last). A new best that is not
        due may wait until a later epoch is saved, and is dropped if that
        one is a better best: only the best and the latest are kept."""

    def latest_saved(self) -> int | None:
        """The epoch of the latest checkpoint, once everything is written."""


def run_epochs(
    config: Config,
    session: Session,
    progress: Progress,
    run_dir: Path,
    quiet: bool,
) -> Progress:
    """Trains epoch by epoch from `progress` until the end or a stop.

    After every epoch: the training loss, the validation loss (teacher
    forced) and the validation MSE of free-running forecasts, logged and
    written to TensorBoard. The best epoch is the one of lowest
    free-running validation MSE; training stops after `patience` epochs
    without a lower one. The session keeps the best epoch and the latest
    of those due: every `checkpoint_every` epochs and the last.
    """
    epoch_log = EpochLog(run_dir / "tensorboard", config, progress, quiet)
    start = time.perf_counter() - progress.seconds
    while progress.epoch < config.epochs and not progress.stopped:
        if STOP.is_set():
            raise Stopped(f"{run_dir}: stopped after epoch {progress.epoch}")
        epoch = progress.epoch + 1
        ratio = teacher_forcing_ratio(config, epoch)
        lr = session.learning_rate()
        try:
            loss = session.train_epoch(epoch, ratio)
        except NonFiniteLossError as error:
            raise NonFiniteLossError(
                f"{run_dir}: epoch {epoch}, {error}; the latest checkpoint "
                f"(epoch {session.latest_saved()}) is the last good one"
            ) from None
        val = session.evaluate()

        progress.epoch = epoch
        progress.seconds = time.perf_counter() - start
        # On a tie the later epoch is the best, as the checkpoint manager
        # keeps it; only a lower MSE resets the patience.
        best = val["mse"] <= progress.best_val_mse
        if val["mse"] < progress.best_val_mse:
            progress.improved_epoch = epoch
        if best:
            progress.best_val_mse, progress.best_epoch = val["mse"], epoch
        progress.stopped = bool(config.patience) and (
            epoch - progress.improved_epoch >= config.patience
        )
        last = progress.stopped or epoch == config.epochs
        due = last or epoch % config.checkpoint_every == 0
        if best or due:
            session.save(progress, val["mse"], due)

        epoch_log.epoch(
            epoch,
            {
                "train/loss": loss,
                "val/loss": val["loss"],
                "val/free_running_mse": val["mse"],
                "lr": lr,
                "teacher_forcing_ratio": ratio,
            },
        )
        if last or epoch % 20 == 0:
            figure = val_example_figure(session.val_windows, val["forecasts"])
            epoch_log.figure(epoch, figure)
        if progress.stopped:
            log.info("%s: no better in %d epochs", run_dir, config.patience)
    epoch_log.close(progress.best_val_mse)
    return progress


def training_summary(
    config: Config, progress: Progress, best_meta: dict[str, Any]
) -> dict[str, Any]:
    """What metrics.json says of training."""
    return {
        "epochs": config.epochs,
        "epochs_run": progress.epoch,
        "stopped_early": progress.stopped,
        "best_epoch": best_meta["epoch"],
        "best_val_mse": best_meta["val_mse"],
        "train_seconds": progress.seconds,
    }


# Validation improves on most early epochs, and an orbax save costs
# 0.2-0.3 s of CPU (its threads, tensorstore, the files): about three
# epochs' train steps in the default run. Hence the waiting below.
class Checkpoints:
    """Writes a run's checkpoints, of which the manager keeps the best
    epoch's and the latest.

    A best that is not due waits in memory (models are immutable) until
    a later epoch is saved, and is dropped if a better best comes first.
    A crash loses it with the epochs after the latest checkpoint, which
    a resumed run trains again to the same numbers.
    """

    def __init__(
        self,
        manager: ocp.CheckpointManager,
        norm: dict[str, float],
        total_steps: int,
    ):
        self.manager = manager
        self.norm = norm
        self.total_steps = total_steps
        self.pending = None  # (epoch, model, meta) of a best not written

    def save(
        self, model: Seq2Seq, progress: Progress, val_mse: float, due: bool
    ) -> None:
        """Checkpoints `model` after `progress.epoch`; see `Session.save`."""
        checkpoint = (
            progress.epoch,
            model,
            progress.checkpoint_meta(val_mse, self.total_steps),
        )
        best = progress.best_epoch == progress.epoch
        if not due:
            if best:
                self.pending = checkpoint  # instead of an older best
            return
        if best:
            self.pending = None
        self._write_pending()
        self._write(*checkpoint)

    def flush(self) -> int | None:
        """Writes the pending best; returns the latest checkpoint's epoch
        once everything is on disk."""
        self._write_pending()
        self.manager.wait_until_finished()
        return self.manager.latest_step()

    def _write(self, epoch: int, model: Seq2Seq, meta: dict[str, Any]) -> None:
        save_checkpoint(self.manager, epoch, model, norm=self.norm, meta=meta)

    def _write_pending(self) -> None:
        if self.pending is not None:
            self._write(*self.pending)
            self.pending = None


class JaxSession:
    """The JAX model in training: its loaders, keys and checkpoints."""

    def __init__(self, config, model, windows, manager, norm, total_steps):
        # Data parallel: the model on every device, each batch split.
        mesh = parallel.make_mesh(config.devices)
        self.mesh = mesh
        parallel.check_batch_size(config.batch_size, mesh)
        self.model = parallel.replicate(model, mesh)
        self.val_windows = windows["val"]
        self.train_loader = make_loader(
            windows["train"],
            config.batch_size,
            train=True,
            seed=config.seed,
            num_workers=config.num_workers,
            sharding=parallel.batch_sharding(mesh),
        )
        self.val_loader = make_loader(
            windows["val"],
            config.batch_size,
            train=False,
            sharding=parallel.batch_sharding(mesh),
        )
        # A training split smaller than a batch makes a smaller one.
        parallel.check_batch_size(self.train_loader.batch_size, mesh)
        # Compiled: run eagerly, the schedule's few ops take 4 ms a call.
        self.schedule = jax.jit(make_schedule(config, total_steps))
        self.train_key = jax.random.split(jax.random.PRNGKey(config.seed))[1]
        self.checkpoints = Checkpoints(manager, norm, total_steps)

    def learning_rate(self) -> float:
        return float(self.schedule(self.model.encoder.step))

    def train_epoch(self, epoch: int, truth_ratio: float) -> float:
        self.train_loader.set_epoch(epoch)
        self.model, loss = train_epoch(
            self.model,
            self.train_loader,
            self.train_key,
            truth_ratio,
            mesh=self.mesh,
        )
        return loss

    def evaluate(self) -> dict[str, Any]:
        return evaluate(self.model, self.val_loader)

    def save(self, progress: Progress, val_mse: float, due: bool) -> None:
        self.checkpoints.save(self.model, progress, val_mse, due)

    def latest_saved(self) -> int | None:
        return self.checkpoints.flush()


def steps_per_epoch(config: Config, windows: dict[str, WindowDataset]) -> int:
    """Training batches an epoch: the last partial one is dropped."""
    return max(len(windows["train"]) // config.batch_size, 1)


def train(
    config: Config,
    splits: Splits,
    run_dir: Path,
    *,
    quiet: bool = False,
    overwrite: bool = False,
) -> tuple[Seq2Seq, dict[str, Any]]:
    """Trains on the training split, choosing the epoch by validation.

    See `run_epochs`. Checkpoints go to `run_dir/checkpoints`, where the
    latest and the best are kept; a run that finds its own checkpoints
    there resumes from the latest. Returns the best model and a summary
    of training.
    """
    windows = make_windows(config, splits)
    norm = fit_normalization(splits)
    total_steps = config.epochs * steps_per_epoch(config, windows)
    init_key = jax.random.split(jax.random.PRNGKey(config.seed))[0]

    def create() -> Seq2Seq:
        return create_model(config, init_key, total_steps, norm["std_floor"])

    with contextlib.closing(
        make_checkpoint_manager(run_dir / "checkpoints")
    ) as manager:
        model, progress = start_or_resume(config, manager, create, overwrite)
        if overwrite:
            for events in run_dir.glob("tensorboard/**/events.out.tfevents.*"):
                events.unlink()
        session = JaxSession(config, model, windows, manager, norm, total_steps)
        if manager.latest_step() is None:
            progress.best_val_mse = session.evaluate()["mse"]
            session.save(progress, progress.best_val_mse, due=True)
        progress = run_epochs(config, session, progress, run_dir, quiet)
        manager.wait_until_finished()
        model, meta = restore_checkpoint(manager, "best")
    return model.replace(config=config), training_summary(
        config, progress, meta
    )


Forecaster = Callable[[np.ndarray, int], np.ndarray]


def baseline_forecasts(
    contexts: np.ndarray, horizon: int, season: int | None
) -> dict[str, np.ndarray]:
    """The naive forecasts of each window, [n, horizon] by name."""
    forecasts = {
        "last_value": metrics.last_value(contexts, horizon),
        "drift": metrics.drift(contexts, horizon),
    }
    if season:
        forecasts["seasonal_naive"] = metrics.seasonal_naive(
            contexts, horizon, season
        )
    return forecasts


def score(
    prefix: str,
    forecast: np.ndarray,
    truth: np.ndarray,
    baselines: dict[str, np.ndarray],
) -> dict[str, float]:
    """Errors of a forecast and of each baseline, under flat names."""
    scores = {
        f"{prefix}_{name}": value
        for name, value in metrics.forecast_errors(forecast, truth).items()
    }
    for baseline, guess in baselines.items():
        errors = metrics.forecast_errors(guess, truth)
        for name, value in errors.items():
            scores[f"{prefix}_baseline_{baseline}_{name}"] = value
    return scores


def compare_with_best_baseline(scores: dict[str, Any], names) -> None:
    """Adds `best_baseline` (lowest test-window MSE) and how many times the
    model's MSE is below its."""
    best = min(names, key=lambda n: scores[f"test_window_baseline_{n}_mse"])
    best_mse = scores[f"test_window_baseline_{best}_mse"]
    model_mse = scores["test_window_mse"]
    scores["best_baseline"] = best
    scores["times_better_than_best_baseline"] = (
        best_mse / model_mse if model_mse > 0 else math.inf
    )


def evaluate_forecasts(
    forecast: Forecaster, config: Config, splits: Splits, run_dir: Path
) -> dict[str, Any]:
    """Test metrics of free-running forecasts, beside naive baselines.

    `forecast(contexts [n, in_len], horizon)` returns [n, horizon]; any
    model that maps windows to forecasts in the series' units fits. The
    test windows are scored, and so is one rollout over the whole test
    range from the last window before it (the end of the validation
    range). Writes the example, stitched and rollout plots into `run_dir`.
    """
    season = config.season or metrics.estimate_season(
        splits.train.y, config.in_len
    )
    test = make_windows(config, splits)["test"]
    contexts, targets = test.contexts(), test.targets()
    forecasts = forecast(contexts, config.out_len)
    history = np.concatenate([splits.train.y, splits.val.y])
    context = history[-config.in_len :].astype(np.float32)[None]
    rollout = forecast(context, len(splits.test))[0]

    window_baselines = baseline_forecasts(contexts, config.out_len, season)
    rollout_baselines = {
        name: guess[0]
        for name, guess in baseline_forecasts(
            context, len(rollout), season
        ).items()
    }
    scores = {
        "season": season,
        "test_windows": len(test),
        **score("test_window", forecasts, targets, window_baselines),
        "rollout_steps": len(rollout),
        "rollout_max_abs_error": float(np.max(np.abs(rollout - splits.test.y))),
        **score("rollout", rollout, splits.test.y, rollout_baselines),
    }
    # The name the summary table and earlier readers of metrics.json use.
    scores["baseline_last_value_mse"] = scores[
        "test_window_baseline_last_value_mse"
    ]
    compare_with_best_baseline(scores, window_baselines)
    plot_forecasts(config, splits, test, forecasts, rollout, run_dir)
    return scores


def plot_forecasts(
    config: Config,
    splits: Splits,
    test: WindowDataset,
    forecasts: np.ndarray,
    rollout: np.ndarray,
    run_dir: Path,
) -> None:
    """The example, stitched and rollout plots of a run's forecasts.

    Args:
      forecasts: [windows, out_len], one per test window.
      rollout: [len(splits.test)], from the end of the validation range.
    """
    name = dataset_name(config.dataset)
    example = len(test) // 2
    start = test.starts[example]
    plots.plot_example(
        run_dir / "example_trajectory.png",
        test.series.t[start : start + config.in_len],
        test.contexts()[example],
        test.target_times(example),
        test.targets()[example],
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
    shown = 4 * config.in_len  # of the history before the test range
    plots.plot_rollout(
        run_dir / "rollout.png",
        np.concatenate([splits.train.t, splits.val.t])[-shown:],
        np.concatenate([splits.train.y, splits.val.y])[-shown:],
        splits.test.t,
        splits.test.y,
        rollout,
        f"{name}: {len(rollout)}-step rollout after the validation range",
    )


def forecaster(model: Seq2Seq) -> Forecaster:
    """The model's jitted `generate`, over windows in fixed-size batches."""

    def forecast(contexts: np.ndarray, horizon: int) -> np.ndarray:
        return forecast_windows(
            model, contexts, horizon, model.config.batch_size
        )

    return forecast


def load_splits(config: Config) -> Splits:
    return load_dataset(
        config.dataset,
        config.test_fraction,
        config.val_fraction,
        time_column=config.time_column,
        value_column=config.value_column,
        fill=config.fill,
    )


def restore_best(checkpoint_dir: Path) -> tuple[Seq2Seq, dict[str, Any]]:
    """The best model of a run's folder or its `checkpoints/`, and its meta."""
    manager = open_checkpoints(checkpoint_dir)
    try:
        return restore_checkpoint(manager, "best")
    finally:
        manager.close()


@dataclasses.dataclass(frozen=True)
class Framework:
    """How a framework trains, restores and forecasts: JAX, or a twin.

    `concurrent`: whether runs may train side by side in threads, which
    needs each run's random numbers to be its own.
    """

    train: Callable[..., tuple[Any, dict[str, Any]]]  # like `train`
    restore_best: Callable[[Path], tuple[Any, dict[str, Any]]]
    forecaster: Callable[[Any], Forecaster]
    concurrent: bool = False


JAX = Framework(train, restore_best, forecaster, concurrent=True)

Result = TypeVar("Result")


def run_in_threads(
    calls: list[Callable[[], Result]], jobs: int
) -> list[Result]:
    """The results of `calls`, in order, made by up to `jobs` threads.

    XLA computes with the GIL released, so runs on different series use
    different cores. If one call fails, or on Ctrl-C, the others stop at
    their next epoch (their checkpoints stay: a rerun resumes them); the
    first failure in order is raised and any others that say something
    else are logged.
    """
    if jobs <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    STOP.clear()
    pool = futures.ThreadPoolExecutor(jobs)
    submitted = [pool.submit(call) for call in calls]
    try:
        futures.wait(submitted, return_when=futures.FIRST_EXCEPTION)
    finally:
        # After a failure or an interrupt: the rest stop, and are waited
        # for. A second Ctrl-C while waiting leaves STOP set, so they
        # still stop.
        if not all(future.done() for future in submitted):
            STOP.set()
            for future in submitted:
                future.cancel()
        pool.shutdown(wait=True)
        STOP.clear()
    raised = [f.exception() for f in submitted if not f.cancelled()]
    errors = [e for e in raised if e and not isinstance(e, Stopped)]
    for error in errors[1:]:
        if str(error) != str(errors[0]):
            log.error("a run beside the first to fail failed too: %s", error)
    if errors:
        raise errors[0]
    return [future.result() for future in submitted]


def remove_empty_folders(folder: Path) -> None:
    """Removes `folder` and the folders under it that hold no file."""
    for path in [*sorted(folder.rglob("*"), reverse=True), folder]:
        if path.is_dir():
            with contextlib.suppress(OSError):  # not empty: kept
                path.rmdir()


def run_all(
    configs: list[Config],
    workdir: Path,
    *,
    seeds: list[int] | None = None,
    jobs: int = 1,
    **options: Any,
) -> list[dict[str, Any]]:
    """`run` on each config, or `run_seeds` with `seeds`: one row each.

    Every series is read before any trains, so bad input stops the whole
    run before anything is written. Up to `jobs` runs train at once (see
    `run_in_threads`): the series, or each series' seeds.
    """
    splits = [load_splits(config) for config in configs]
    if seeds:
        return [
            run_seeds(
                config, seeds, workdir, jobs=jobs, splits=split, **options
            )
            for config, split in zip(configs, splits, strict=True)
        ]
    return run_in_threads(
        [
            functools.partial(run, config, workdir, splits=split, **options)
            for config, split in zip(configs, splits, strict=True)
        ],
        jobs,
    )


def run(
    config: Config,
    workdir: Path,
    *,
    quiet: bool = False,
    overwrite: bool = False,
    run_dir: Path | None = None,
    framework: Framework = JAX,
    splits: Splits | None = None,
) -> dict[str, Any]:
    """Trains and evaluates on `config.dataset`; writes `metrics.json`.

    Everything goes to `run_dir`, by default `workdir/<dataset>/`.
    `splits` saves reading the series again.
    """
    if splits is None:
        splits = load_splits(config)
    run_dir = run_dir or Path(workdir) / dataset_name(config.dataset)
    fresh = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        model, summary = framework.train(
            config, splits, run_dir, quiet=quiet, overwrite=overwrite
        )
    except InputError:
        if fresh:  # bad input found in training leaves no empty folders
            remove_empty_folders(run_dir)
        raise
    forecast = framework.forecaster(model)
    metrics = {
        "dataset": dataset_name(config.dataset),
        **evaluate_forecasts(forecast, config, splits, run_dir),
        **summary,
        "config": config.to_json(),
    }
    write_json(run_dir / "metrics.json", metrics)
    log.info("%s: wrote checkpoints, metrics and plots", run_dir)
    return metrics


def run_seeds(
    config: Config,
    seeds: list[int],
    workdir: Path,
    *,
    jobs: int = 1,
    **options: Any,
) -> dict[str, Any]:
    """Runs once per seed; returns each number's mean, and its `_std`.

    Runs go to `workdir/<dataset>/seed<S>/`; the summary to `seeds.json`
    beside them. Up to `jobs` seeds train at once (see `run_in_threads`);
    `options` go to `run`.
    """
    name = dataset_name(config.dataset)
    if options.get("splits") is None:
        options["splits"] = load_splits(config)
    runs = run_in_threads(
        [
            functools.partial(
                run,
                config.replace(seed=seed),
                workdir,
                run_dir=Path(workdir) / name / f"seed{seed}",
                **options,
            )
            for seed in seeds
        ],
        jobs,
    )
    summary = {"dataset": name, "seeds": seeds}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = np.array([r[key] for r in runs], np.float64)
            summary[key] = float(values.mean())
            summary[f"{key}_std"] = float(
                values.std(ddof=min(1, len(runs) - 1))
            )
        elif key not in summary:
            summary[key] = value
    write_json(Path(workdir) / name / "seeds.json", {**summary, "runs": runs})
    return summary


def rerun_from_checkpoint(
    checkpoint_dir: Path, workdir: Path, framework: Framework = JAX
) -> dict[str, Any]:
    """Redoes forecasts, metrics and plots of a saved model, untrained.

    The config comes from the checkpoint. The outputs go to
    `workdir/<dataset>/restored/`, beside the trained run's, never over
    them.
    """
    model, meta = framework.restore_best(checkpoint_dir)
    config = Config.from_json(meta["config"])
    splits = load_splits(config)
    run_dir = Path(workdir) / dataset_name(config.dataset) / "restored"
    run_dir.mkdir(parents=True, exist_ok=True)
    forecast = framework.forecaster(model)
    metrics = {
        "dataset": dataset_name(config.dataset),
        **evaluate_forecasts(forecast, config, splits, run_dir),
        "epochs": config.epochs,
        "best_epoch": meta["epoch"],
        "best_val_mse": meta["val_mse"],
        "train_seconds": None,  # not measured here: see the trained run's
        "restored_from": str(Path(checkpoint_dir).absolute()),
        "config": config.to_json(),
    }
    write_json(run_dir / "metrics.json", metrics)
    log.info(
        "%s: restored epoch %s from %s, wrote forecasts, metrics and plots",
        run_dir,
        meta["epoch"],
        checkpoint_dir,
    )
    return metrics
