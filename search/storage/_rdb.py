"""Optuna storages of ``crmlab search`` (``--storage``): an SQLite file in the runs folder by default, or a
PostgreSQL / MySQL server for workers on several machines; heartbeats fail (and retry) the trials of dead workers."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from pydantic import Field

from crmlab.registry import CrmlabError
from crmlab.runners.studyfile import Strict

__all__ = ["Heartbeat", "check_storage_url", "default_storage", "open_storage", "redact"]


SCHEMA_ATTEMPTS = 4
"""Tries at opening a storage whose schema another process is creating at the same moment."""


class Heartbeat(Strict):
    """Optuna heartbeats: a running trial whose worker has been silent ``grace`` seconds is failed and retried."""

    interval: int = Field(default=30, ge=1)
    grace: int = Field(default=120, ge=2)
    max_retry: int = Field(default=3, ge=0)


def default_storage(runs_dir: Path) -> str:
    return f"sqlite:///{runs_dir.resolve() / 'optuna.db'}"


def check_storage_url(url: str | None) -> str:
    """The scheme of a ``--storage`` URL, checked without connecting or writing (an SQLite file's folder must be
    writable); ``None`` is the default SQLite file in the (checked) runs folder."""
    if url is None:
        return "sqlite"
    scheme = url.split(":", 1)[0].split("+", 1)[0] if ":" in url else ""
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise CrmlabError(f"--storage: {url!r}: use sqlite:///PATH, postgresql://USER@HOST:PORT/DB or mysql://...")
    if scheme == "sqlite" and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        folder = Path(url.removeprefix("sqlite:///")).absolute().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise CrmlabError(f"--storage: cannot use {url}: {folder} is not a writable folder")
    return scheme


def open_storage(url: str | None, runs_dir: Path, heartbeat: Heartbeat) -> RDBStorage:
    """An Optuna RDB storage with heartbeats and failed-trial retry; a URL that cannot be used is ``--storage: ...``.

    Nothing is written for a bad URL: the connection is made (and the schema created) by the first request.
    """
    hb = heartbeat
    scheme = check_storage_url(url)
    if url is None:
        runs_dir.mkdir(parents=True, exist_ok=True)
        url = default_storage(runs_dir)
    if scheme == "sqlite":
        engine: dict[str, Any] = {"connect_args": {"timeout": 60}}
    elif scheme == "postgresql":
        engine = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    else:
        engine = {"pool_pre_ping": True}
    try:
        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental" since 2.8
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(
                        url,
                        engine_kwargs=engine,
                        heartbeat_interval=hb.interval,
                        grace_period=hb.grace,
                        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=hb.max_retry),
                    )
            except Exception as exc:
                # Two processes creating the schema of an empty database at once: one of them loses a CREATE race
                # (a duplicate key in the catalogue); the schema is there a moment later.
                if attempt + 1 == SCHEMA_ATTEMPTS or "IntegrityError" not in type(exc).__name__ + repr(exc):
                    raise
                time.sleep(0.5 * (attempt + 1))
    except Exception as exc:  # driver missing, host unreachable, bad credentials, bad path
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ModuleNotFoundError):
            first += " (PostgreSQL needs a driver: pip install 'crmlab[postgres]')"
        raise CrmlabError(f"--storage: cannot use {redact(url)}: {first.replace(url, redact(url))}") from None


def redact(url: str | None) -> str:
    """A database or tracking URL with its password replaced by ``***`` (for logs, MLflow and error lines)."""
    if not url:
        return str(url)
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (an http:// tracking server): hide user:password@ by hand
        head, sep, rest = url.partition("://")
        if sep and "@" in rest.split("/", 1)[0]:
            return f"{head}://***@{rest.split('@', 1)[1]}"
        return url
