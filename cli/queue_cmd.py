"""``crmlab queue``: the served studies of a shared storage, their runs by state, and draining or cancelling one."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "cmd_queue"]


def cmd_queue(args: argparse.Namespace) -> int:
    """Print the queue; with ``--drain`` or ``--cancel`` change one study first."""
    from crmlab.search.served import cancel_study, drain_study, queue_rows, queue_text

    if args.cancel:
        name, count = cancel_study(args.storage, args.cancel)
        print(f"{name}: drained, {count} waiting run(s) cancelled; running runs finish")
    elif args.drain:
        print(f"{drain_study(args.storage, args.drain)}: drained; running runs finish, workers claim no more")
    print(queue_text(queue_rows(args.storage)))
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``queue`` sub-command to the ``crmlab`` parser."""
    p = sub.add_parser("queue", help="the served studies of a shared storage: runs waiting, running, finished, failed")
    p.add_argument("--storage", required=True, help="the Optuna storage drivers and workers share")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--drain", metavar="STUDY", help="workers claim no more of this study's runs")
    group.add_argument("--cancel", metavar="STUDY", help="drain the study and fail its waiting runs")
    p.set_defaults(func=cmd_queue)
