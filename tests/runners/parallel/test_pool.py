"""The worker pool: errors come back as one line, a dead worker fails only its task, out-of-memory tasks are retried
with fewer processes sharing memory, and each worker starts with its slot's environment."""

from __future__ import annotations

import os
import signal

from crmlab.runners.parallel import Outcome, Slot, WorkerPool, run_tasks
from crmlab.runners.parallel._pool import one_line


def _task(what: str) -> dict[str, str]:
    """A worker task: ``ok``, ``fail``, ``die`` (SIGKILL itself), ``oom`` (out of memory unless alone)."""
    if what == "fail":
        raise ValueError("bad value\nsecond line of detail")
    if what == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "oom" and os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123 bytes")
    return {"pid": str(os.getpid()), "devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def test_a_dead_worker_fails_only_its_task_and_errors_are_one_line() -> None:
    tasks = list(enumerate(["ok", "die", "fail", "ok", "ok"]))
    seen: list[Outcome] = []
    with WorkerPool([Slot(0), Slot(1)], _task) as pool:
        outcomes = {o.key: o for o in pool.run(tasks, seen.append)}
    assert len(seen) == 5 and sorted(outcomes) == [0, 1, 2, 3, 4]
    assert [outcomes[i].ok for i in range(5)] == [True, False, False, True, True]
    assert outcomes[1].error.startswith("its worker process died from SIGKILL")
    assert outcomes[2].error == "ValueError: bad value"
    assert not outcomes[2].oom
    pids = {outcomes[i].value["pid"] for i in (0, 3, 4)}
    assert 1 <= len(pids) <= 3, "workers are reused between tasks, and replaced after a death"


def test_workers_start_with_their_slots_devices_and_out_of_memory_is_retried_alone() -> None:
    slots = [Slot(0, ("0",), 2), Slot(1, ("0",), 2)]
    retried: list[Outcome] = []
    results = run_tasks(slots, _task, [("a", "ok"), ("b", "oom")], on_retry=retried.append)
    assert results["a"].ok and results["a"].value["devices"] == "0"
    assert [o.key for o in retried] == ["b"] and retried[0].oom
    assert results["b"].ok and results["b"].slot == Slot(0, ("0",), 1), "retried on an exclusive slot"


def test_one_line_keeps_crmlab_messages_and_names_other_exceptions() -> None:
    from crmlab.runners.rundir import TrainingFailed

    assert one_line(TrainingFailed("loss is NaN at epoch 2")) == "loss is NaN at epoch 2"
    assert one_line(MemoryError()) == "MemoryError"
    assert one_line(KeyError("x")) == "KeyError: 'x'"
