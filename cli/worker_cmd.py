"""``crmlab worker``: serve the studies in a shared Optuna storage (ablation runs enqueued by ``crmlab ablate
--storage``), on any machine that sees the driver's runs folder and data at the same paths."""

from __future__ import annotations

import argparse
import os
from typing import Any

from crmlab import options

__all__ = ["add_parser", "cmd_worker"]


def cmd_worker(args: argparse.Namespace) -> int:
    """Claim and train enqueued runs until idle for ``--exit-when-idle`` seconds (or forever)."""
    from crmlab.search.served import serve, serve_slots

    if len(args.slots) > 1:
        return serve_slots(args.storage, args.slots, args.exit_when_idle, os.environ.get("KERAS_BACKEND"))
    return serve(args.storage, args.exit_when_idle, log=_log)


def _log(line: str) -> None:
    print(line, flush=True)


def add_parser(sub: Any) -> None:
    """Add the ``worker`` sub-command to the ``crmlab`` parser."""
    p = sub.add_parser(
        "worker",
        help="train the runs that drivers (crmlab ablate --storage) enqueued in a shared storage",
        parents=[options.keras_backend(), options.placement("train runs")],
    )
    p.add_argument("--storage", required=True, help="the drivers' Optuna storage: postgresql://USER@HOST:PORT/DB")
    p.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="leave once the queue has been empty this long (default: wait for work forever)",
    )
    p.set_defaults(func=cmd_worker)
