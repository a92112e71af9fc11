"""A pool of worker processes that survives its workers: one long-lived process per placement slot, one task at
a time each, a dead worker replaced.

Python's ``ProcessPoolExecutor`` fails every pending job when one worker dies (``BrokenProcessPool``), which turned
one out-of-memory run into a crashed study. Here each slot (:class:`~crmlab.runners.parallel._placement.Slot`) has its
own process, started with the slot's environment (its GPUs, its memory budget) so the backend sees only those devices. A
task that raises comes back as a failure with a one-line reason; a worker that dies (killed, out of host memory, a crash
in native code) fails only the task it was running, and the next task on that slot gets a new process. A process keeps
what it compiled between tasks (``crmlab.runners.training._compiled``), so the runs of one graph compile once per
worker. Every worker ends as soon as the process that started it is gone.

A task whose failure says it ran out of memory (``RESOURCE_EXHAUSTED``, ``out of memory``, :class:`MemoryError`) is
marked ``oom``; :func:`run_tasks` retries those once on :func:`~crmlab.runners.parallel._placement.exclusive_slots`,
i.e. with fewer processes sharing the memory.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from crmlab.runners.parallel._oom import is_out_of_memory
from crmlab.runners.parallel._placement import Slot, exclusive_slots, set_environment

__all__ = [
    "Outcome",
    "WorkerPool",
    "death_reason",
    "one_line",
    "run_tasks",
    "slot_environment",
]


@dataclass
class Outcome:
    """What became of one task.

    Attributes:
        key: the task's key.
        ok: it returned.
        value: what it returned.
        error: one-line reason when it failed.
        oom: it ran out of memory (and may be retried with fewer processes sharing it).
        slot: the slot it ran on.
    """

    key: Hashable
    ok: bool
    value: Any = None
    error: str = ""
    oom: bool = False
    slot: Slot | None = None


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message's first non-empty line, prefixed by its type unless it is crmlab's."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if type(exc).__module__.startswith("crmlab."):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _watch(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="crmlab-parent-watch", daemon=True).start()


def _serve(conn: Connection, parent: int, entry: Callable[[Any], Any]) -> None:
    """A worker's loop: run each task received, send back ``(ok, value | (reason, oom))``; ``None`` ends it."""
    _watch(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends the workers
    while (task := conn.recv()) is not None:
        try:
            conn.send((True, entry(task)))
        except Exception as exc:
            conn.send((False, (one_line(exc), is_out_of_memory(exc))))


@contextmanager
def slot_environment(slot: Slot) -> Iterator[None]:
    """This process's environment set to ``slot``'s (:meth:`Slot.env <crmlab.runners.parallel._placement.Slot.env>`) for
    the duration: start a process inside it to give the process the slot (a spawned process copies the
    environment as it starts), before it imports a backend."""
    changes = slot.env()
    saved = {name: os.environ.get(name) for name in changes}
    try:
        set_environment(changes)
        yield
    finally:
        set_environment(saved)


def death_reason(exitcode: int | None) -> str:
    """Why a worker process ended, from its exit code (negative: the signal that killed it), as a phrase."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (killed: out of host memory, or by a user)" if -exitcode == signal.SIGKILL else ""
        return f"its worker process died from {name}{hint}"
    return f"its worker process exited with code {exitcode}"


class WorkerPool:
    """Long-lived worker processes, one per slot, started on demand and replaced when they die.

    Args:
        slots: one process per slot, started with :meth:`Slot.env <crmlab.runners.parallel._placement.Slot.env>`.
        entry: a module-level function run on each task's argument in a worker (picklable).

    Use it as a context manager; :meth:`close` ends the workers.
    """

    def __init__(self, slots: Sequence[Slot], entry: Callable[[Any], Any]) -> None:
        self.slots = list(slots)
        self.entry = entry
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: dict[int, tuple[Any, Connection]] = {}

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _process(self, i: int) -> tuple[Any, Connection]:
        if i not in self._procs:
            mine, theirs = self._ctx.Pipe()
            proc = self._ctx.Process(target=_serve, args=(theirs, os.getpid(), self.entry), daemon=True)
            with slot_environment(self.slots[i]):
                proc.start()
            theirs.close()
            self._procs[i] = (proc, mine)
        return self._procs[i]

    def _drop(self, i: int) -> None:
        proc, conn = self._procs.pop(i)
        conn.close()
        proc.join(timeout=5)

    def run(
        self, tasks: Sequence[tuple[Hashable, Any]], on_done: Callable[[Outcome], None] | None = None
    ) -> list[Outcome]:
        """Run ``(key, argument)`` tasks on the slots, in order as slots come free.

        Args:
            tasks: each task's key and the argument passed to ``entry``.
            on_done: called with each outcome as it comes in.

        Returns:
            The outcomes, in the order they finished.
        """
        pending = deque(tasks)
        busy: dict[int, Hashable] = {}
        done: list[Outcome] = []
        while pending or busy:
            for i in range(len(self.slots)):
                if pending and i not in busy:
                    key, arg = pending.popleft()
                    proc, conn = self._process(i)
                    try:
                        conn.send(arg)
                    except (BrokenPipeError, OSError):
                        self._drop(i)
                        pending.appendleft((key, arg))
                        continue
                    busy[i] = key
            watched = {}
            for i in busy:
                proc, conn = self._procs[i]
                watched[conn], watched[proc.sentinel] = i, i
            for ready in wait(list(watched)):
                i = watched[ready]
                if i not in busy:
                    continue
                outcome = self._receive(i, busy.pop(i))
                done.append(outcome)
                if on_done is not None:
                    on_done(outcome)
        return done

    def _receive(self, i: int, key: Hashable) -> Outcome:
        proc, conn = self._procs[i]
        try:
            if conn.poll():
                ok, value = conn.recv()
                if ok:
                    return Outcome(key, True, value, slot=self.slots[i])
                reason, oom = value
                return Outcome(key, False, error=reason, oom=oom, slot=self.slots[i])
        except (EOFError, OSError):
            pass
        proc.join(timeout=10)
        reason = death_reason(proc.exitcode)
        self._drop(i)
        return Outcome(key, False, error=reason, slot=self.slots[i])

    def close(self) -> None:
        """Ask every worker to end, then wait for it (a worker still busy is terminated)."""
        for i in list(self._procs):
            proc, conn = self._procs[i]
            with suppress(BrokenPipeError, OSError):
                conn.send(None)
        for i in list(self._procs):
            proc, _ = self._procs[i]
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
            self._drop(i)


def run_tasks(
    slots: Sequence[Slot],
    entry: Callable[[Any], Any],
    tasks: Sequence[tuple[Hashable, Any]],
    on_done: Callable[[Outcome], None] | None = None,
    on_retry: Callable[[Outcome], None] | None = None,
    pool: WorkerPool | None = None,
) -> dict[Hashable, Outcome]:
    """Run tasks on a worker pool; retry those that ran out of memory once with fewer processes sharing memory.

    Args:
        slots: the placement.
        entry: the worker function (module level).
        tasks: ``(key, argument)`` pairs.
        on_done: called with each final outcome.
        on_retry: called with each out-of-memory outcome before it is retried.
        pool: a pool to use (kept open across calls, e.g. a study's rounds, unless a retry needs its memory:
            then it is closed, and starts its workers again when next used); default: one for this call.

    Returns:
        The final outcome of each task by key.
    """
    own = pool is None
    pool = WorkerPool(slots, entry) if pool is None else pool
    args = dict(tasks)
    results: dict[Hashable, Outcome] = {}
    retry: list[Outcome] = []
    retry_slots = exclusive_slots(slots)
    can_retry = len(retry_slots) < len(slots)

    def first(outcome: Outcome) -> None:
        if outcome.oom and can_retry:
            retry.append(outcome)
            return
        results[outcome.key] = outcome
        if on_done is not None:
            on_done(outcome)

    try:
        pool.run(list(tasks), first)
    finally:
        if own or retry:
            pool.close()  # a retry gets the memory the other workers held
    if retry:
        for outcome in retry:
            if on_retry is not None:
                on_retry(outcome)

        def second(outcome: Outcome) -> None:
            results[outcome.key] = outcome
            if on_done is not None:
                on_done(outcome)

        with WorkerPool(retry_slots, entry) as again:
            again.run([(o.key, args[o.key]) for o in retry], second)
    return results
