"""``crmlab search``: run a search study, print its leaderboard and export the best trial as a train study."""

from __future__ import annotations

import argparse
from typing import Any

from crmlab import model_registry, options

__all__ = ["add_parser", "cmd_search"]


def cmd_search(args: argparse.Namespace) -> int:
    """Run a search study (kind: search): canonical once, then trials; leaderboard, importances, export."""
    from crmlab.runners.rundir import checked_runs_dir
    from crmlab.search.arch import (
        BACKENDS,
        SearchOptions,
        assemble_space,
        check_choice,
        check_export_path,
        choose_trial,
        export_best,
        load_search,
    )
    from crmlab.search.storage import check_storage_url

    runs_dir = checked_runs_dir(args.runs_dir)
    export = check_export_path(args.export)
    model_registry.check_options(args)
    check_storage_url(args.storage)
    search = load_search(args.study, args.set, assemble=False)
    doc = search.doc
    pick = check_choice(search, args.pick, args.trial, export is not None or args.register is not None)
    publish = None
    if not args.slots:  # --jobs 0: drive only, crmlab worker processes train
        from crmlab.search.served import search_publisher

        publish = search_publisher(search, runs_dir, args.storage, args.tracking_uri)
    search_options = SearchOptions(
        tracking_uri=args.tracking_uri,
        mlflow=not args.no_mlflow,
        storage=args.storage,
        workers=len(args.slots),
        slots=args.slots,
        progress=_silent if args.quiet else _progress,
        publish=publish,
    )
    backend = BACKENDS[doc.backend]()
    backend.check_options(search_options)
    assemble_space(search)  # every distinct model once (seconds each): after the flags, before anything is written
    goals = ", ".join(f"{g.metric} ({g.resolved})" for g in search.goals)
    limits = "".join(f", {k} <= {v.max:g}" for k, v in doc.constraints.items())
    print(
        f"{doc.name}: {doc.backend} search, {len(search.space)} parameters, {doc.trials} trials, "
        f"objective{'s' if search.multi else ''} {goals}{limits}; canonical {search.canonical_parameters:,} "
        "parameters",
        flush=True,
    )
    backend.connect(search, runs_dir, search_options)
    if search_options.mlflow:
        from crmlab.runners.tracking import Tracker

        Tracker(args.tracking_uri, doc.name)  # an unusable tracking store is reported before an SQLite storage
    run = backend.run(search, runs_dir, search_options)
    print(backend.summary(search, run))
    if export is None and args.register is None:
        return 0
    chosen = choose_trial(search, run.rows, pick, args.trial)
    model_registry.register_search(args, search, run.rows, runs_dir, chosen)
    if export is not None:
        study_file, graph_file = export_best(search, chosen.params, export)
        which = "best trial" if pick is None and args.trial is None else "trial"
        print(f"{which} {chosen.number} exported: {study_file} (graph {graph_file}); train it: crmlab train {export}")
    return 0


def _progress(line: str) -> None:
    print(line, flush=True)


def _silent(line: str) -> None:
    del line


def add_parser(sub: Any) -> None:
    """Add the ``search`` sub-command to the ``crmlab`` parser."""
    p = sub.add_parser(
        "search",
        help="search a space of variants (kind: search) with Optuna or KerasTuner",
        parents=[
            *options.study_run(),
            options.placement("run trials"),
            options.register("the best trial's model"),
        ],
    )
    p.add_argument("study", help="search study YAML (e.g. studies/quick_search.yaml)")
    p.add_argument("--storage", help="Optuna storage URL, shared by workers (default: sqlite:///<runs-dir>/optuna.db)")
    p.add_argument("--export", metavar="BEST.yaml", help="write the best trial as a train study (+ BEST.graph.yaml)")
    p.add_argument(
        "--pick",
        metavar="RULE",
        help="the trial to export / register: 'max val_pearson_r where params <= 1e6' (complete, feasible trials)",
    )
    p.add_argument("--trial", type=int, metavar="N", help="export / register trial N")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-trial progress lines")
    p.set_defaults(func=cmd_search)
