"""The ``crmlab runs`` sub-command: list a runs folder's runs (size, state, study, variant) and, with ``--prune``,
delete what no study in it needs (see :mod:`crmlab.runners.rundir._inventory`): a dry-run listing first, ``--yes`` to
delete.

The folder is ``--runs-dir``, as for every other command; the former positional ``crmlab runs RUNS_DIR`` is still
accepted (hidden from the help).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from crmlab import options
from crmlab.registry import CrmlabError

__all__ = ["add_parser", "cmd_runs"]


def cmd_runs(args: argparse.Namespace) -> int:
    """List the runs of a runs folder; ``--prune``: what a clean-up deletes (``--yes``: delete it)."""
    from crmlab.runners.rundir import (
        default_runs_dir,
        folder_size,
        list_runs,
        manifest_summary,
        prune,
        prune_plan,
        size_text,
    )

    folder = _folder(args)
    runs_dir = Path(folder) if folder else default_runs_dir()
    if not runs_dir.is_dir():
        raise CrmlabError(f"{runs_dir}: no such runs folder")
    runs = list_runs(runs_dir)
    print(f"{'run':<16}  {'size':>9}  {'state':<10}  {'study':<24}  variant")
    for run in runs:
        owners = run.owners or [("-", "", "-")]
        study, _, variant = owners[0]
        more = f" (+{len(owners) - 1} more)" if len(owners) > 1 else ""
        print(f"{run.key:<16}  {size_text(run.size):>9}  {run.state:<10}  {study:<24}  {variant or '-'}{more}")
    states = {s: sum(r.state == s for r in runs) for s in ("finished", "unfinished", "running", "pruned")}
    counts = ", ".join(f"{n} {s}" for s, n in states.items() if n)
    print(f"{len(runs)} runs ({counts or 'none'}); {size_text(folder_size(runs_dir))} in {runs_dir}")
    print(manifest_summary(runs_dir))
    if not args.prune:
        return 0
    plan = prune_plan(runs_dir)
    if not plan:
        print("nothing to prune")
        return 0
    total = size_text(sum(item.size for item in plan))
    if not args.yes:
        print(f"--prune would delete {len(plan)} item(s), {total}:")
        for item in plan:
            what = f"{item.path}/ (resumable state)" if item.drop else str(item.path)
            print(f"  {size_text(item.size):>9}  {what}: {item.reason}")
        print("run again with --yes to delete them")
        return 0
    done = prune(plan)
    for item in done:
        print(f"deleted {size_text(item.size):>9}  {item.path}{' (resumable state)' if item.drop else ''}")
    skipped = len(plan) - len(done)
    note = f"; {skipped} skipped (a process took the run meanwhile)" if skipped else ""
    print(f"deleted {len(done)} item(s), {size_text(sum(item.size for item in done))}{note}")
    return 0


def _folder(args: argparse.Namespace) -> str | None:
    """The runs folder named by ``--runs-dir`` or the deprecated positional ``RUNS_DIR`` (``None``: the default)."""
    if args.old_runs_dir is None:
        return args.runs_dir
    if args.runs_dir is not None and Path(args.runs_dir) != Path(args.old_runs_dir):
        raise CrmlabError(f"--runs-dir {args.runs_dir} and RUNS_DIR {args.old_runs_dir}: name one runs folder")
    return args.old_runs_dir


def add_parser(sub: Any) -> None:
    """Add the ``runs`` sub-command to the ``crmlab`` parser."""
    p = sub.add_parser(
        "runs",
        help="list a runs folder's runs (size, state, study, variant); --prune: delete what no study needs",
        parents=[options.runs_dir()],
    )
    # the former spelling `crmlab runs RUNS_DIR`, kept for existing scripts
    p.add_argument("old_runs_dir", nargs="?", metavar="RUNS_DIR", help=argparse.SUPPRESS)
    p.add_argument("--prune", action="store_true", help="list what a clean-up deletes (a dry run unless --yes)")
    p.add_argument("--yes", action="store_true", help="with --prune: delete it")
    p.set_defaults(func=cmd_runs)
