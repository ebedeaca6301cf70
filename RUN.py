"""Trains and evaluates the seq2seq LSTM forecaster: python RUN.py --help."""

import argparse
import logging
import sys
from pathlib import Path

from config import TOY_DATASETS, Config, InputError

log = logging.getLogger("RUN")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line and status 2, like every other input error.
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv=None) -> argparse.Namespace:
    defaults = Config()
    p = _Parser(
        prog="RUN.py",
        description="Train the seq2seq LSTM forecaster and evaluate its "
        "free-running forecasts on the test range.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        default="all",
        help="sine, linear, all (both), or the PATH of a series file "
        "(CSV with t,y; one column of values; or tab-separated windows)",
    )
    p.add_argument("--workdir", default="runs", help="where runs are written")
    p.add_argument(
        "--restore",
        metavar="DIR",
        help="a run's checkpoint "
        "directory: redo forecasts, metrics and plots, untrained",
    )
    p.add_argument(
        "--epochs", type=int, default=defaults.epochs, help="training epochs"
    )
    p.add_argument(
        "--seed", type=int, default=defaults.seed, help="random seed"
    )
    p.add_argument(
        "--encoder",
        choices=["uni", "bi"],
        default=defaults.encoder,
        help="unidirectional or bidirectional",
    )
    p.add_argument(
        "--merge",
        choices=["concat", "sum", "mean", "max"],
        default=defaults.merge,
        help="how the bidirectional encoder merges its two directions",
    )
    p.add_argument(
        "--hidden", type=int, default=defaults.hidden, help="LSTM units"
    )
    p.add_argument(
        "--layers", type=int, default=defaults.layers, help="LSTM layers"
    )
    p.add_argument(
        "--dropout",
        type=float,
        default=defaults.dropout,
        help="between encoder layers",
    )
    p.add_argument(
        "--in-len", type=int, default=defaults.in_len, help="input window"
    )
    p.add_argument(
        "--out-len",
        type=int,
        default=defaults.out_len,
        help="forecast length trained on",
    )
    p.add_argument(
        "--stride", type=int, default=defaults.stride, help="between windows"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="windows per batch",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=defaults.lr,
        help="initial learning rate (cosine decay)",
    )
    p.add_argument(
        "--num-workers",
        type=int,
        default=defaults.num_workers,
        help="DataLoader worker processes",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=defaults.checkpoint_every,
        help="epochs between checkpoints (improvements are always saved)",
    )
    p.add_argument("--quiet", action="store_true", help="no epoch log lines")
    return p.parse_args(argv)


def make_configs(args: argparse.Namespace) -> list[Config]:
    datasets = TOY_DATASETS if args.dataset == "all" else (args.dataset,)
    return [
        Config(
            dataset=dataset,
            epochs=args.epochs,
            seed=args.seed,
            encoder=args.encoder,
            merge=args.merge,
            hidden=args.hidden,
            layers=args.layers,
            dropout=args.dropout,
            in_len=args.in_len,
            out_len=args.out_len,
            stride=args.stride,
            batch_size=args.batch_size,
            lr=args.lr,
            num_workers=args.num_workers,
            checkpoint_every=args.checkpoint_every,
        )
        for dataset in datasets
    ]


def print_summary(rows: list[dict]) -> None:
    header = ("dataset", "test MSE", "rollout MSE", "baseline MSE", "epoch")
    print("\n" + "  ".join(f"{h:>14}" for h in header))
    for m in rows:
        cells = (
            m["dataset"],
            f"{m['test_window_mse']:.3e}",
            f"{m['rollout_mse']:.3e}",
            f"{m['baseline_last_value_mse']:.3e}",
            f"{m['best_epoch']}/{m['epochs']}",
        )
        print("  ".join(f"{c:>14}" for c in cells))


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
    )
    for noisy in ("absl", "orbax", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    # Imported here so that --help and flag errors answer at once.
    import experiment

    try:
        if args.restore:
            rows = [
                experiment.rerun_from_checkpoint(args.restore, args.workdir)
            ]
        else:
            rows = []
            for config in make_configs(args):
                log.info("training on %s", config.dataset)
                rows.append(experiment.run(config, Path(args.workdir)))
    except InputError as error:
        print(f"RUN.py: error: {error}", file=sys.stderr)
        return 2
    print_summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
