"""One study-level progress line per event of a long command (``crmlab ablate``): runs done of the total, time
elapsed, an estimate of what remains, and the run it is about.

The estimate is the wall time elapsed per finished run (parallel runs finish faster) times the runs left; it is
``?`` until one run has finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["StudyProgress", "duration_text"]


def duration_text(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``1h02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class StudyProgress:
    """Progress lines for ``total`` runs, written through ``emit``.

    Args:
        total: runs to train.
        emit: called with each line (``print``, a logger, a list's ``append``).
        clock: seconds (monotonic), for tests.
    """

    def __init__(self, total: int, emit: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.emit, self.clock = total, emit, clock
        self.start = clock()
        self.done = 0

    def _times(self) -> str:
        elapsed = self.clock() - self.start
        if self.done == 0:
            return f"{duration_text(elapsed)} elapsed, ? left"
        left = elapsed / self.done * (self.total - self.done)  # wall time per finished run, parallel runs included
        return f"{duration_text(elapsed)} elapsed, ~{duration_text(left)} left"

    def starting(self, label: str) -> None:
        """A run starts (in this process)."""
        self.emit(f"[{self.done}/{self.total}] training {label} ({self._times()})")

    def finished(self, label: str, outcome: str) -> None:
        """A run finished (or failed): ``outcome`` says how."""
        self.done += 1
        self.emit(f"[{self.done}/{self.total}] {label}: {outcome} ({self._times()})")
