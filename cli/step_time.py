"""``crmlab bench``: time training steps of a graph spec across batch sizes, precisions, backends and strategies."""

from __future__ import annotations

import argparse
from pathlib import Path

from crmlab import options

__all__ = ["add_parser", "cmd_bench"]


def cmd_bench(args: argparse.Namespace) -> int:
    """Time training steps of a spec across batch sizes, precisions, backends and strategies (bench/step_time.py)."""
    from crmlab.registry import load_graph
    from crmlab.runners.benchmark import TABLE_COLUMNS, run_step_time, text_table

    name = load_graph(args.spec).name
    if args.quick:
        args.batch_sizes, args.steps, args.warmup = args.batch_sizes or [8], 2, 1
    out = Path(args.out) if args.out else Path("bench/results") / f"step_time_{name}.csv"
    rows, run_id = run_step_time(
        args.spec,
        out,
        batch_sizes=args.batch_sizes or [32, 64, 128],
        precisions=args.precisions,
        backends=args.backends,
        strategies=args.strategies,
        steps=args.steps,
        warmup=args.warmup,
        jit_compile={"true": True, "false": False}.get(args.jit_compile, args.jit_compile),
        dataset_size=args.dataset_size,
        tracking_uri=args.tracking_uri,
        mlflow=not args.no_mlflow,
        progress=lambda line: print(line, flush=True),
    )
    print(f"table: {out}; MLflow run {run_id or '-'}")
    print(text_table(rows, TABLE_COLUMNS))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command to ``sub``."""
    p = sub.add_parser(
        "bench",
        help="time training steps of a spec: batch sizes x precisions x backends x strategies",
        parents=[options.keras_backend("Keras backend of this process"), options.tracking_uri(), options.no_mlflow()],
    )
    p.add_argument("spec", help="graph spec YAML (e.g. studies/graphs/crmnet.yaml)")
    p.add_argument("--batch-sizes", type=int, nargs="+", metavar="N", help="per-device batch sizes (32 64 128)")
    p.add_argument(
        "--precisions", nargs="+", default=["float32"], metavar="P", help="float32 mixed_float16 mixed_bfloat16"
    )
    p.add_argument("--backends", nargs="+", metavar="B", help="tensorflow jax (default: the running backend)")
    p.add_argument("--strategies", nargs="+", default=["one"], metavar="S", help="one (device) and/or all (devices)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per setting (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps (compilation)")
    p.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"], help="recipe.jit_compile")
    p.add_argument("--dataset-size", type=int, default=30_722_376, help="sequences per epoch for the epoch time")
    p.add_argument("-o", "--out", help="CSV file (default: bench/results/step_time_<spec name>.csv; .md beside it)")
    p.add_argument("--quick", action="store_true", help="CI size: batch 8 unless given, 2 timed steps, 1 warm-up")
    p.set_defaults(func=cmd_bench)
