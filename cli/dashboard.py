"""``crmlab dashboard STUDY``: optuna-dashboard on a search's Optuna storage, served on 127.0.0.1.

The dashboard shows the search's history, parameter importances and the intermediate values (one per fine-tuning
epoch) that pruning used; for a multi-objective search, the Pareto front (axes named after the objectives, trials
rejected over a cost constraint shown infeasible). It is an optional extra (``pip install 'crmlab[dashboard]'``).
KerasTuner searches keep no Optuna storage: their trials are in MLflow (``mlflow ui``), which the command says
instead of starting.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from crmlab import options
from crmlab.registry import CrmlabError

__all__ = ["add_parser", "cmd_dashboard"]


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard for the search study ``args.study`` until interrupted."""
    from crmlab.runners.rundir import checked_runs_dir
    from crmlab.search.arch import load_search
    from crmlab.search.storage import default_storage

    search = load_search(args.study, args.set, assemble=False)
    doc = search.doc
    if doc.backend != "optuna":
        raise CrmlabError(
            f"{args.study}: a {doc.backend} search keeps no Optuna storage for optuna-dashboard; its trials are MLflow "
            f"runs of the experiment '{doc.name}' (mlflow ui --backend-store-uri sqlite:///mlflow.db)"
        )
    url = args.storage or default_storage(checked_runs_dir(args.runs_dir))
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise CrmlabError(f"{args.study}: no search storage at {url}; run crmlab search {args.study} first")
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise CrmlabError("crmlab dashboard needs optuna-dashboard: pip install 'crmlab[dashboard]'") from None
    front = f"; its Pareto front of {', '.join(g.metric for g in search.goals)}" if search.multi else ""
    print(
        f"optuna-dashboard for '{doc.name}' on http://127.0.0.1:{args.port}/dashboard/ (storage {url}){front}; Ctrl-C"
        " stops",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        run_server(url, host="127.0.0.1", port=args.port)
    return 0


def add_parser(sub: Any) -> None:
    """Register ``crmlab dashboard`` on the CLI's subparsers."""
    p = sub.add_parser(
        "dashboard",
        help="serve optuna-dashboard for a search study's Optuna storage on 127.0.0.1",
        parents=[options.overrides(), options.runs_dir()],
    )
    p.add_argument("study", help="search study YAML (backend: optuna)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<runs-dir>/optuna.db, as crmlab search)")
    p.add_argument("--port", type=options.positive_int, default=8080, help="port on 127.0.0.1 (default 8080)")
    p.set_defaults(func=cmd_dashboard)
