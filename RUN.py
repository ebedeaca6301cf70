"""Trains and evaluates the seq2seq LSTM forecaster: python RUN.py --help."""

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from config import TOY_DATASETS, Config, InputError, flag_name

log = logging.getLogger("RUN")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line and status 2, like every other input error.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a list of integers: {text!r}"
        ) from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed repeats: {text!r}")
    return seeds


def parse_args(argv=None) -> argparse.Namespace:
    """The flags: one per `Config` field, and those of the run itself."""
    p = _Parser(
        prog="RUN.py",
        description="Train the seq2seq LSTM forecaster and evaluate its "
        "free-running forecasts on the test range, beside naive baselines.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--workdir", default="runs", help="where runs are written")
    p.add_argument(
        "--restore",
        metavar="DIR",
        help="a run's folder or its checkpoints/: redo forecasts, metrics "
        "and plots without training, into WORKDIR/<dataset>/restored/",
    )
    p.add_argument(
        "--seeds",
        type=_seeds,
        metavar="S1,S2,...",
        help="train once per seed (in WORKDIR/<dataset>/seed<S>/) and "
        "report the mean and standard deviation",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="series (or seeds) trained at once, each in a thread; 0: one "
        "per core. The PyTorch twin, --distributed and batches split over "
        "several devices train one at a time",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh where a run of another configuration was saved",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one process of a multi-host run: join the others through "
        "jax.distributed.initialize (the cluster's launcher sets it up)",
    )
    p.add_argument(
        "--debug-nans",
        action="store_true",
        help="have JAX stop at the first NaN it computes",
    )
    for field in dataclasses.fields(Config):
        help_text = field.metadata["help"]
        if field.name == "dataset":
            field_default = "all"
            help_text = "sine, linear, all (both), or a series file's path"
        else:
            field_default = field.default
        p.add_argument(
            flag_name(field.name),
            type=type(field.default),
            default=field_default,
            choices=field.metadata["choices"] or None,
            help=help_text,
        )
    args = p.parse_args(argv)
    if args.jobs < 0:
        p.error(f"argument --jobs: must be 0 or more, got {args.jobs}")
    return args


def make_configs(args: argparse.Namespace) -> list[Config]:
    """One config per dataset the flags name."""
    fields = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Config)
    }
    datasets = TOY_DATASETS if args.dataset == "all" else (args.dataset,)
    return [Config(**{**fields, "dataset": dataset}) for dataset in datasets]


def concurrent_runs(args: argparse.Namespace, framework, devices: int) -> int:
    """How many series (or seeds) train at once, each in a thread.

    One with --distributed, or where each batch is split over several
    devices: the collectives of two runs at once would wait on each
    other. One for the PyTorch twin, which draws from torch's global
    random numbers.
    """
    split = devices > 1 and args.devices != 1
    if args.distributed or split or not framework.concurrent:
        return 1
    return args.jobs or os.cpu_count() or 1


def print_summary(rows: list[dict]) -> None:
    """The table that is the program's answer, one row per dataset."""
    header = (
        "dataset",
        "test MSE",
        "rollout MSE",
        "last-value MSE",
        "best baseline",
        "its MSE",
        "model vs best",
    )
    lines = [header]
    for m in rows:
        best = m["best_baseline"]
        lines.append(
            (
                m["dataset"],
                _number(m, "test_window_mse"),
                _number(m, "rollout_mse"),
                _number(m, "test_window_baseline_last_value_mse"),
                best,
                _number(m, f"test_window_baseline_{best}_mse"),
                _better_or_worse(m["times_better_than_best_baseline"]),
            )
        )
    widths = [max(len(line[k]) for line in lines) for k in range(len(header))]
    print()
    for line in lines:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))


def _better_or_worse(times_better: float) -> str:
    if times_better >= 1:
        return f"{times_better:.3g}x better"
    if times_better > 0:
        return f"{1 / times_better:.3g}x worse"
    return "baseline exact"


def _number(metrics: dict, name: str, spec: str = ".3e") -> str:
    value = metrics[name]
    if f"{name}_std" in metrics:
        return f"{value:{spec}} ± {metrics[f'{name}_std']:.1e}"
    return f"{value:{spec}}"


def main(argv=None, framework=None, subdir: str = "") -> int:
    """Runs what the flags say; returns the exit status.

    `framework` is how to train (`experiment.JAX` by default, or a twin's),
    and `subdir` a folder inside WORKDIR for its runs.
    """
    args = parse_args(argv)
    # force: a library imported earlier may have set up the root logger.
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        force=True,
    )
    # Their warnings speak of internals (read-only managers and the like);
    # what a user must know is logged by our modules.
    for noisy in ("absl", "orbax", "jax"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    # Imported here so that --help and flag errors answer at once.
    import jax

    import experiment
    from TrainTest import NonFiniteLossError

    if args.distributed:
        jax.distributed.initialize()
    if args.debug_nans:
        jax.config.update("jax_debug_nans", True)

    framework = framework or experiment.JAX
    workdir = Path(args.workdir) / subdir
    jobs = concurrent_runs(args, framework, jax.device_count())
    options = {
        "quiet": args.quiet,
        "overwrite": args.overwrite,
        "framework": framework,
    }
    try:
        if args.restore:
            rows = [
                experiment.rerun_from_checkpoint(
                    args.restore, workdir, framework
                )
            ]
        else:
            rows = experiment.run_all(
                make_configs(args),
                workdir,
                seeds=args.seeds,
                jobs=jobs,
                **options,
            )
    except InputError as error:
        print(f"RUN.py: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"RUN.py: training diverged: {error}", file=sys.stderr)
        return 1
    print_summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
