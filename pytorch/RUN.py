"""Trains and evaluates the torch twin: python pytorch/RUN.py --help."""

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its
# Dataloader.py and RUN.py would hide the top-level modules of those names.
ROOT = Path(__file__).resolve().parent.parent
HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import logging  # noqa: E402

from config import InputError  # noqa: E402
from RUN import make_configs, parse_args, print_summary  # noqa: E402


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
    )
    for noisy in ("absl", "orbax", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    # Imported here so that --help and flag errors answer at once.
    import torch

    from pytorch import experiment

    # The model's matrices are small, so threads mostly wait on each
    # other: on two cores one thread trains an epoch 15x faster than two.
    torch.set_num_threads(1)

    workdir = Path(args.workdir)
    try:
        if args.seeds:
            # TODO: experiment.run_seeds calls the JAX run; it needs a
            # parameter for the run function before the twin can use it.
            raise InputError("--seeds: not available for the torch twin yet")
        if args.restore:
            rows = [experiment.rerun_from_checkpoint(args.restore, workdir)]
        else:
            rows = [
                experiment.run(config, workdir, quiet=args.quiet)
                for config in make_configs(args)
            ]
    except InputError as error:
        print(f"RUN.py: error: {error}", file=sys.stderr)
        return 2
    print_summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
