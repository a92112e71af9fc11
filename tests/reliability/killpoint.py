"""Run ``crmlab`` in this process and SIGKILL it at a named point of the training path.

    python -m tests.reliability.killpoint POINT N TRACE -- crmlab arguments...

kills the process (``SIGKILL``: no clean-up of any kind) at the ``N``-th time it reaches ``POINT`` (``none``: never),
and appends ``RUN_KEY STAGE EPOCH`` to the file ``TRACE`` each time an epoch begins, so a test can count the epochs
computed more than once. The points, in the order a run meets them:

* ``create-run``: right after an MLflow run is created, before its id is recorded anywhere;
* ``batch``: while a training batch is being read (mid-epoch);
* ``state-commit``: a checkpoint's files are written, ``state.json`` is not yet replaced;
* ``state-committed``: ``state.json`` replaced, the previous checkpoint not yet removed;
* ``mlflow-metrics``: an epoch's metrics sent to MLflow, not yet marked as sent;
* ``stage-store``: a finished pretraining stage written to a temporary folder, not yet renamed into the cache;
* ``outputs``: the run's outputs written (``result.json``), the run not yet marked finished;
* ``clean-up``: the run marked finished, the first file of its checkpoint deleted, the rest not yet.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def _kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, n: int, trace: str) -> None:
    """Patch the training path: a kill at the ``n``-th arrival at ``point``, and epoch tracing into ``trace``."""
    from crmlab.runners.rundir import CheckpointState
    from crmlab.runners.rundir import _retention as retention
    from crmlab.runners.tracking import _tracker as tracking
    from crmlab.runners.training import _batches as pipeline
    from crmlab.runners.training import _train as train
    from crmlab.runners.training._epoch_control import EpochControl

    calls = {"n": 0}

    def arrive() -> None:
        calls["n"] += 1
        if calls["n"] == n:
            _kill()

    def around(owner: Any, name: str, after: bool, when: Callable[..., bool] = lambda *a, **k: True) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            hit = when(*args, **kwargs)
            if hit and not after:
                arrive()
            out = original(*args, **kwargs)
            if hit and after:
                arrive()
            return out

        setattr(owner, name, wrapper)

    points: dict[str, Callable[[], None]] = {
        "create-run": lambda: around(
            tracking.Tracker, "start", True, lambda self, name, tags, run_id=None: run_id is None
        ),
        "batch": lambda: around(pipeline.Batches, "__getitem__", False),
        "state-commit": lambda: around(CheckpointState, "commit", False),
        "state-committed": lambda: around(CheckpointState, "commit", True),
        "mlflow-metrics": lambda: around(tracking.Tracker, "log_metrics", True),
        "stage-store": lambda: around(os, "rename", False, lambda src, dst: "_stages" in str(dst)),
        "outputs": lambda: around(train, "write_outputs", True),
        "clean-up": lambda: around(retention, "_remove", True),
        "none": lambda: None,
    }
    points[point]()

    begin = EpochControl.on_epoch_begin

    def traced(self: Any, epoch: int, logs: Any = None) -> None:
        with open(trace, "a") as fh:
            fh.write(f"{self.state.run_dir.name} {self.stage.name} {epoch + 1}\n")
            fh.flush()
            os.fsync(fh.fileno())
        begin(self, epoch, logs)

    EpochControl.on_epoch_begin = traced


def main(argv: list[str]) -> int:
    point, n, trace, sep, *args = argv
    assert sep == "--", "usage: killpoint POINT N TRACE -- crmlab arguments..."
    from crmlab.cli import main as crmlab_main

    install(point, int(n), trace)
    return crmlab_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
