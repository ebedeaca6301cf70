"""Runs the benchmarks: python -m benchmarks [--quick] [--only SECTION]."""

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from files import write_json

DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"
SECTIONS = ("train", "generate", "compile", "flops", "scaling", "run")

log = logging.getLogger("benchmarks")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much of each section to measure."""

    train_batches: tuple[int, ...] = (32, 128, 512)
    hiddens: tuple[int, ...] = (64, 256)
    generate_batches: tuple[int, ...] = (32, 0)  # 0: all windows at once
    generate_hiddens: tuple[int, ...] = (64,)
    repeats: int = 5  # rounds of interleaved measurements
    compile_repeats: int = 3
    run_repeats: int = 1
    target_seconds: float = 0.25  # one measurement, about
    sections: tuple[str, ...] = SECTIONS


QUICK = Plan(
    train_batches=(32,),
    hiddens=(64,),
    generate_batches=(32,),
    repeats=3,
    compile_repeats=2,
    target_seconds=0.05,
    sections=("train", "generate", "compile", "flops"),
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time the JAX forecaster against its PyTorch twin: "
        "training, generation, compiling, GFLOP/s and RUN.py end to end.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: a small grid, few repeats, no RUN.py",
    )
    p.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        help="run only this section; may be given more than once",
    )
    p.add_argument(
        "--repeats",
        type=int,
        help="rounds of every section, RUN.py's included",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help="where the results go (default: benchmarks/results.json)",
    )
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else Plan()
    if args.only:
        plan = dataclasses.replace(
            plan, sections=tuple(s for s in SECTIONS if s in args.only)
        )
    if args.repeats:
        plan = dataclasses.replace(
            plan,
            repeats=args.repeats,
            compile_repeats=args.repeats,
            run_repeats=args.repeats,
        )
    return plan


def run_section(name: str, plan: Plan) -> Any:
    # Imported here so that --help answers without loading JAX and torch.
    from benchmarks import (
        compiling,
        endtoend,
        flops,
        generation,
        scaling,
        training,
    )

    if name == "train":
        rows = training.benchmark_training(
            plan.train_batches, plan.hiddens, plan.repeats, plan.target_seconds
        )
        training.print_training(rows)
    elif name == "generate":
        rows = generation.benchmark_generation(
            plan.generate_batches,
            plan.generate_hiddens,
            plan.repeats,
            plan.target_seconds,
        )
        generation.print_generation(rows)
    elif name == "compile":
        rows = compiling.benchmark_compiling(plan.compile_repeats)
        compiling.print_compiling(rows)
    elif name == "flops":
        rows = flops.benchmark_flops(
            plan.hiddens, plan.repeats, plan.target_seconds
        )
        flops.print_flops(rows)
    elif name == "scaling":
        rows = scaling.benchmark_scaling(128, plan.compile_repeats)
        scaling.print_scaling(rows)
    else:
        rows = endtoend.benchmark_run(plan.run_repeats)
        endtoend.print_run(rows)
    sys.stdout.flush()
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("absl", "orbax", "jax"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    plan = make_plan(args)

    # One CPU device per usable core, for the training contender that
    # splits each batch over them; a count forced in XLA_FLAGS wins. Set
    # before anything starts JAX, which fixes its devices when it starts.
    import jax

    forced = "xla_force_host_platform_device_count"
    if forced not in os.environ.get("XLA_FLAGS", ""):
        cores = len(os.sched_getaffinity(0))
        jax.config.update("jax_num_cpu_devices", cores)

    from benchmarks import report, workloads

    args.json.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": {
            **report.describe_machine(workloads.DEFAULT_TORCH_THREADS),
            "jax_cpu_devices": jax.device_count(),
        },
        "plan": dataclasses.asdict(plan),
        "seconds": {},
        "sections": {},
    }
    start = time.perf_counter()
    for name in plan.sections:
        section_start = time.perf_counter()
        results["sections"][name] = run_section(name, plan)
        results["seconds"][name] = time.perf_counter() - section_start
        log.info("%s: %.0f s", name, results["seconds"][name])
        # Written after every section, so that a failure keeps the rest.
        write_json(args.json, results)
    results["seconds"]["total"] = time.perf_counter() - start
    results["machine"]["load_average_after"] = os.getloadavg()
    write_json(args.json, results)

    spent = ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items())
    print(f"\nBenchmark seconds: {spent}. Results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
