"""``crmlab confirm``: confirm a finished search's chosen trials against canonical in an ablation on fresh seeds."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from crmlab import options

__all__ = ["add_parser", "cmd_confirm", "seeds_pair"]


def seeds_pair(text: str) -> tuple[int, int]:
    """An argument type: ``INITIAL[:MAX]`` adaptive seeds (``3:6``; ``3`` is ``3:3``), INITIAL at least 2."""
    initial, _, most = text.partition(":")
    try:
        pair = (int(initial), int(most or initial))
    except ValueError:
        pair = (0, 0)
    if pair[0] < 2 or pair[1] < pair[0]:
        raise argparse.ArgumentTypeError(f"expected INITIAL[:MAX] with 2 <= INITIAL <= MAX, got {text!r}")
    return pair


def cmd_confirm(args: argparse.Namespace) -> int:
    """Choose trials of a finished search, write them as an ablation study beside it, run it and report search score
    against confirmed score per trial."""
    from crmlab.runners.rundir import checked_runs_dir
    from crmlab.search.ablation import seeds_text, table_text, undecided_lines
    from crmlab.search.arch import load_search, parse_pick
    from crmlab.search.confirm import (
        DEFAULT_SEEDS,
        prepare_confirmation,
        run_confirmation,
        scores_markdown,
        selection_seeds,
    )

    runs_dir = checked_runs_dir(args.runs_dir)
    search = load_search(args.study, args.set, assemble=False)
    pick = parse_pick(args.pick, search) if args.pick is not None else None
    c = prepare_confirmation(
        search,
        runs_dir,
        storage=args.storage,
        top=args.top,
        trials=args.trials,
        pareto=args.pareto,
        pick=pick,
        seeds=args.seeds or DEFAULT_SEEDS,
    )
    ablation = c.ablation
    numbers = ", ".join(str(r.number) for r in c.chosen)
    print(f"{search.doc.name}: confirming trial(s) {numbers} against canonical, {seeds_text(ablation.doc.seeds)}")
    print(f"confirmed study: {c.path} (crmlab ablate {c.path} re-runs or extends it)", flush=True)
    run_confirmation(c, runs_dir, args.tracking_uri, mlflow=not args.no_mlflow, slots=args.slots, progress=_progress)
    rows, scores = c.rows or [], c.scores or []
    print(table_text(rows, ablation.doc.metric))
    print(scores_markdown(scores, search.metric, selection_seeds(search, c.chosen)))
    print(f"report: {c.report}")
    for (name, seed), reason in ablation.failed.items():
        print(f"{c.path}: {name} seed={seed} failed: {reason}", file=sys.stderr)
    for line in undecided_lines(rows, ablation.doc.metric):
        print(line)
    return 1 if ablation.failed else 0


def _progress(line: str) -> None:
    print(line, flush=True)


def add_parser(sub: Any) -> None:
    """Add the ``confirm`` sub-command to the ``crmlab`` parser."""
    p = sub.add_parser(
        "confirm",
        help="confirm a finished search's best trials against canonical in an ablation on fresh seeds",
        parents=[*options.study_run(), options.placement("train runs")],
    )
    p.add_argument("study", help="the search study YAML that ran (kind: search)")
    choice = p.add_mutually_exclusive_group(required=True)
    choice.add_argument(
        "--top",
        type=options.positive_int,
        metavar="K",
        help="confirm the K best complete, feasible trials by the first objective (or by --pick)",
    )
    choice.add_argument("--pareto", action="store_true", help="confirm every trial on the Pareto front")
    choice.add_argument("--trials", type=int, nargs="+", metavar="N", help="confirm these trial numbers")
    p.add_argument(
        "--pick",
        metavar="RULE",
        help="with --top: rank by this rule instead, e.g. 'max val_pearson_r where params <= 1e6'",
    )
    p.add_argument(
        "--seeds",
        type=seeds_pair,
        metavar="INITIAL[:MAX]",
        help="adaptive confirmation seeds, numbered past the search's selection seed (default 3:6)",
    )
    p.add_argument("--storage", help="the search's Optuna storage URL (default: sqlite:///<runs-dir>/optuna.db)")
    p.set_defaults(func=cmd_confirm)
