"""``crmlab train``: train a train study, evaluate it on its test sets and print the metrics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from crmlab import model_registry, options

__all__ = ["add_parser", "cmd_train"]


def cmd_train(args: argparse.Namespace) -> int:
    """Train a study: stages, test metrics, MLflow run."""
    from crmlab.runners.parallel import is_chief, join_processes
    from crmlab.runners.rundir import Owner, checked_runs_dir, record_study
    from crmlab.runners.studyfile import TrainStudy, load_train_study, read_study
    from crmlab.runners.tracking import Tracker
    from crmlab.runners.training import train_run

    runs_dir = checked_runs_dir(args.runs_dir)
    model_registry.check_options(args)
    join_processes(read_study(Path(args.study), args.set, TrainStudy).recipe.strategy)  # before JAX uses a device
    loaded = load_train_study(args.study, args.set, assemble=True)
    chief = is_chief()  # the other processes of a multi_worker run write nothing
    tracker = None if args.no_mlflow or not chief else Tracker(args.tracking_uri, loaded.study.name)
    owner = Owner(loaded.study.name, "train")
    if chief:
        record_study(runs_dir, owner, "start")
    result = train_run(
        loaded.graph,
        loaded.study.recipe,
        loaded.datasets,
        loaded.tests,
        runs_dir,
        tracker=tracker,
        run_name=loaded.study.name,
        verbose=args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2),
        owner=owner,
    )
    if chief:
        record_study(runs_dir, owner, "finish")
    print(f"run {result.run_key} ({result.run_dir}); MLflow run {result.mlflow_run_id or '-'}")
    if result.validation:
        v = result.validation
        stage = loaded.study.recipe.stages[-1].name
        print(f"validation ({stage}, exported model): pearson_r {v['val_pearson_r']:.4f}, r2 {v['val_r2']:.4f}")
    print(f"{'test set':<34} {'n':>6} {'pearson_r':>10} {'spearman':>10} {'r2':>8} {'mse':>8}")
    for name, m in result.test_metrics.items():
        n = len(result.predictions.get(name, []))
        print(f"{name:<34} {n:>6} {m['pearson_r']:>10.4f} {m['spearman_rho']:>10.4f} {m['r2']:>8.4f} {m['mse']:>8.4f}")
    if tracker is not None:
        model_registry.register_result(args, result, loaded.study.name, "train")
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``train`` sub-command to the ``crmlab`` parser."""
    p = sub.add_parser(
        "train",
        help="train a study (kind: train) and evaluate it on its test sets",
        parents=[
            *options.study_run(),
            options.register("the run's model"),
        ],
    )
    p.add_argument("study", help="train study YAML (e.g. studies/train_small.yaml)")
    p.add_argument(
        "--verbose",
        type=int,
        choices=[0, 1, 2],
        help="Keras progress: 0 none, 1 bar, 2 a line per epoch (default: 1 on a terminal, else 2)",
    )
    p.set_defaults(func=cmd_train)
