"""``crmlab ablate`` and ``crmlab compare``: run an ablation study and compare its variants against canonical."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from crmlab import model_registry, options
from crmlab.registry import CrmlabError

__all__ = ["add_parsers", "cmd_ablate", "cmd_compare"]


def cmd_ablate(args: argparse.Namespace) -> int:
    """Run an ablation study (variants x seeds), then print and write the comparison."""
    from crmlab.runners.rundir import checked_runs_dir
    from crmlab.search.ablation import load_ablation, run_ablation, seeds_text, table_text, undecided_lines

    runs_dir = checked_runs_dir(args.runs_dir)
    model_registry.check_options(args)
    if args.storage:
        from crmlab.search.storage import check_storage_url

        check_storage_url(args.storage)  # before the models are built (seconds each)
    ablation = load_ablation(args.study, args.set)
    choice = model_registry.check_ablation_options(args, ablation)
    names = ", ".join(f"{v.name} ({v.parameters:,} params)" for v in ablation.variants)
    print(f"{ablation.doc.name}: {len(ablation.variants)} variants x {seeds_text(ablation.doc.seeds)}: {names}")
    if args.storage:
        results, rows, report = _drive(args, ablation, runs_dir)
    else:
        results, rows, report = run_ablation(
            ablation, runs_dir, args.tracking_uri, mlflow=not args.no_mlflow, slots=args.slots, progress=_progress
        )
    print(table_text(rows))
    print(f"report: {report}")
    for (name, seed), reason in ablation.failed.items():
        print(f"{args.study}: {name} seed={seed} failed: {reason}", file=sys.stderr)
    model_registry.register_ablation(args, ablation, choice, results)
    for line in undecided_lines(rows, ablation.doc.metric):
        print(line)
    return 1 if ablation.failed else 0


def _drive(args: argparse.Namespace, ablation: Any, runs_dir: Any) -> tuple[Any, Any, Any]:
    """Drive the study through the shared storage (:class:`crmlab.search.served.QueueDriver`), with ``--jobs`` local
    workers (none with ``--jobs 0``), stopped (their runs handed back) when the study is done or the driver stops."""
    import os

    from crmlab.search.ablation import run_ablation
    from crmlab.search.served import QueueDriver, start_workers, stop_workers
    from crmlab.search.storage import redact

    driver = QueueDriver(args.storage, ablation, runs_dir, args.tracking_uri, heartbeat=args.heartbeat)
    print(f"driving {ablation.doc.name} through {redact(args.storage)} with {len(args.slots)} local worker(s)")
    procs = start_workers(args.storage, args.slots, None, os.environ.get("KERAS_BACKEND")) if args.slots else []
    try:
        return run_ablation(
            ablation, runs_dir, args.tracking_uri, mlflow=not args.no_mlflow, progress=_progress, serve=driver
        )
    finally:
        stop_workers(procs)


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare the finished runs of an ablation study against canonical (trains nothing)."""
    from crmlab.runners.rundir import checked_runs_dir
    from crmlab.search.ablation import collect, compare, load_ablation, table_text, undecided_lines, write_all

    runs_dir = checked_runs_dir(args.runs_dir)
    ablation = load_ablation(args.study, args.set, assemble=False)
    results, missing = collect(ablation, runs_dir)
    if missing:
        raise CrmlabError(f"{args.study}: {len(missing)} run(s) not finished: {', '.join(missing)}; run crmlab ablate")
    rows = compare(ablation, results)
    print(table_text(rows))
    print(f"report: {write_all(ablation, rows, results, runs_dir)[0]}")
    for line in undecided_lines(rows, ablation.doc.metric):
        print(line)
    return 0


def _progress(line: str) -> None:
    print(line, flush=True)


def add_parsers(sub: Any) -> None:
    """Add the ``ablate`` and ``compare`` sub-commands to the ``crmlab`` parser."""
    p = sub.add_parser(
        "ablate",
        help="run an ablation study (kind: ablation) and compare it against canonical",
        parents=[
            *options.study_run(),
            options.placement("train runs"),
            options.register("a run's model (canonical's, the first seed's, unless named below)", variant=True),
        ],
    )
    p.add_argument("study", help="ablation study YAML (e.g. studies/quickstart.yaml)")
    p.add_argument(
        "--storage",
        help="drive the study through this shared Optuna storage (postgresql://USER@HOST:PORT/DB): its runs are "
        "enqueued there and trained by crmlab worker processes on any machine",
    )
    p.add_argument(
        "--heartbeat",
        type=options.positive_int,
        default=30,
        metavar="SECONDS",
        help="with --storage: workers' heartbeat interval; a run silent for 4 intervals is retried (default 30)",
    )
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser(
        "compare",
        help="compare an ablation study's finished runs against canonical (trains nothing)",
        parents=[options.overrides(), options.keras_backend(), options.tracking_uri(), options.runs_dir()],
    )
    p.add_argument("study", help="ablation study YAML (e.g. studies/quickstart.yaml)")
    p.set_defaults(func=cmd_compare)
