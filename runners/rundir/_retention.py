"""What a run keeps on disk: its lock, the clean-up once it has finished, and dropping the state of a run that will
never resume.

A finished run keeps what reading it needs (``state.json``, ``result.json``, ``model.keras``, the predictions,
``graph.yaml``, ``recipe.yaml``, ``timing.json``, the scatter plots and prediction tables); its resumable state
(``ckpt-<n>/`` folders: weights, optimiser state and best weights; ``stage<i>-start.npz``) is deleted once its
outputs are written and MLflow has them: a finished run is never trained again. Setting the environment variable
``CRMLAB_KEEP_STATE=1`` keeps it. The setting is read where the run finishes, never hashed into the run key: it
changes what stays on disk, not what is trained, so turning it on or off never retrains a run (and it reaches the
worker processes of ``--jobs`` and ``--workers`` with the rest of the environment).

A pruned search trial never resumes: its state is dropped at once (:func:`drop_state`), leaving a fresh
``state.json`` marked ``pruned``, so an identical configuration sampled again starts from its first epoch.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from crmlab.runners.rundir._checkpoint import CheckpointState

__all__ = [
    "KEEP_STATE_ENV",
    "LOCK",
    "clean_finished",
    "discard_unfinished",
    "drop_state",
    "keep_state",
    "resumable_files",
    "run_lock",
]

KEEP_STATE_ENV = "CRMLAB_KEEP_STATE"
"""Environment variable: ``1`` (or ``true``, ``yes``) keeps a finished run's resumable state."""
LOCK = ".lock"
"""The run's lock file: held (``flock``) by the process training the run."""


def keep_state() -> bool:
    """Whether finished runs keep their resumable state (:data:`KEEP_STATE_ENV`)."""
    return os.environ.get(KEEP_STATE_ENV, "").strip().lower() in ("1", "true", "yes")


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the run's lock (exclusive ``flock`` on ``RUN_DIR/.lock``) for the ``with`` block.

    Args:
        run_dir: the run's directory (it must exist).
        wait: wait for a process holding it; else yield ``False`` at once when it is held.

    Yields:
        ``True`` with the lock held (``False`` only when ``wait`` is off and another process holds it).
    """
    with open(run_dir / LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def resumable_files(run_dir: Path) -> list[Path]:
    """The run's resumable state on disk: checkpoint folders, stage start weights and temporary files."""
    found = [p for p in run_dir.glob("ckpt-*") if p.is_dir()]
    found += list(run_dir.glob("stage*-start.npz")) + list(run_dir.glob("tmp-stage*-start.npz"))
    return sorted(found + list(run_dir.glob("*.tmp")))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_finished(run_dir: Path) -> None:
    """Delete a finished run's resumable state (:func:`resumable_files`); a kill half-way leaves a finished run
    whose next reading cleans the rest."""
    for path in resumable_files(run_dir):
        if path.is_dir():
            for inner in sorted(path.iterdir()):
                _remove(inner)
        _remove(path)


def drop_state(state: CheckpointState) -> None:
    """Reset a run that will never resume (a pruned trial): commit a fresh ``state.json`` marked ``pruned``, then
    delete the checkpoints it named. The epochs it trained move to ``dropped_history``. The caller holds the run's
    lock; the run's next training starts from its first epoch (its MLflow run is not reopened: a new one is made)."""
    trained = state["dropped_history"] + state["history"]
    state.reset(pruned=True, dropped_history=trained)
    state.commit()
    clean_finished(state.run_dir)


def discard_unfinished(run_dir: Path) -> bool:
    """Drop the state of the unfinished run in ``run_dir`` unless it is finished or its lock is held.

    Returns:
        Whether the state was dropped.
    """
    if not (run_dir / "state.json").exists():
        return False
    with run_lock(run_dir, wait=False) as held:
        if not held:
            return False
        state = CheckpointState(run_dir)
        if state["finished"]:
            return False
        drop_state(state)
        return True
