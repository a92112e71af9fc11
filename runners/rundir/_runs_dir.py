"""Where the runs folder is: ``--runs-dir``, else ``CRMLAB_RUNS``, else ``./crmlab-runs``, checked writable."""

from __future__ import annotations

import os
from pathlib import Path

from crmlab.registry import CrmlabError

__all__ = ["checked_runs_dir", "default_runs_dir"]


def default_runs_dir() -> Path:
    """Where run directories go without ``--runs-dir``: ``CRMLAB_RUNS``, else ``./crmlab-runs``."""
    return Path(os.environ.get("CRMLAB_RUNS", "crmlab-runs"))


def checked_runs_dir(arg: str | None) -> Path:
    """``--runs-dir`` (default :func:`default_runs_dir`), checked before anything is written: the path, or its
    nearest existing parent, must be a writable folder. The folder itself is made by the first run."""
    path = Path(arg) if arg else default_runs_dir()
    flag = "--runs-dir" if arg or "CRMLAB_RUNS" not in os.environ else "CRMLAB_RUNS"
    try:
        existing = next(p for p in (path, *path.parents) if p.exists())
    except (OSError, ValueError) as exc:
        raise CrmlabError(f"{flag}: cannot use {str(path)!r}: {exc}") from None
    except StopIteration:
        return path
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise CrmlabError(f"{flag}: {path} is not a folder{where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CrmlabError(f"{flag}: cannot write in {existing}")
    return path
