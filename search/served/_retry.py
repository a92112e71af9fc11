"""Storage calls that survive a database restart or a network loss: retried with back-off, then a one-line error."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from crmlab.registry import CrmlabError

__all__ = ["DATABASE_PATIENCE_S", "fail_stale", "retrying"]

T = TypeVar("T")

DATABASE_PATIENCE_S = 600.0
"""How long a driver or worker waits for the database to come back before it gives up (seconds)."""


def retrying(call: Callable[[], T], patience: float = DATABASE_PATIENCE_S) -> T:
    """``call()``, retried with back-off (1 s doubling to 30 s) while the database cannot be reached.

    Only connection failures are retried (SQLAlchemy's ``OperationalError`` and ``InterfaceError``, which a
    restarted PostgreSQL or a lost network raise); anything else propagates at once.

    Raises:
        CrmlabError: the database was still unreachable after ``patience`` seconds.
    """
    from sqlalchemy.exc import InterfaceError, OperationalError

    from crmlab.search.storage import redact

    deadline = time.monotonic() + patience
    delay = 1.0
    while True:
        try:
            return call()
        except (OperationalError, InterfaceError) as exc:
            first = str(getattr(exc, "orig", exc)).strip().splitlines()
            reason = redact(first[0]) if first else type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise CrmlabError(f"the database is unreachable ({reason}) for {patience:.0f} s: giving up") from None
            print(f"database unreachable ({reason}); retrying in {delay:.0f} s", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(2 * delay, 30.0)


def fail_stale(study: Any) -> None:
    """Optuna's ``fail_stale_trials``: fail the running trials whose worker's heartbeat is older than the grace period
    (the storage's retry callback enqueues each again); without Optuna's "experimental" warning."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
