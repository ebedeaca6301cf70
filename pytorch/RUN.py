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

import RUN  # noqa: E402


def main(argv=None) -> int:
    # Imported here so that --help and flag errors answer at once.
    import torch

    from pytorch.experiment import TORCH

    # The model's matrices are small, so threads mostly wait on each
    # other: on two cores one thread trains an epoch 15x faster than two.
    torch.set_num_threads(1)
    return RUN.main(argv, framework=TORCH, subdir="pytorch")


if __name__ == "__main__":
    sys.exit(main())
