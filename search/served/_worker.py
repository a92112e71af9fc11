"""``crmlab worker``: serve every crmlab study in a shared Optuna storage, on any machine.

Each worker process loops: claim an enqueued trial (the WAITING → RUNNING update that Optuna's RDB storage makes under
``SELECT ... FOR UPDATE``, so two workers never get the same one), keep its lease with heartbeats, train it through
the single-run path (:func:`crmlab.search.ablation.run_task`: same run key, same run folder, resumed from its
checkpoint), and report it (COMPLETE with the first test set's Pearson r, or FAIL with a one-line reason). An empty
queue is polled with a back-off; ``exit_when_idle`` ends the worker after that many idle seconds. SIGTERM (and
Ctrl-C) hands the trial back: it is failed and the same run enqueued again, so another worker resumes it from its
last epoch checkpoint. A SIGKILLed worker's trial is failed and enqueued again by Optuna's heartbeat callback once
its lease runs out (:mod:`crmlab.search.served._driver`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from crmlab.registry import CrmlabError
from crmlab.runners.parallel import Slot, current_slot, is_out_of_memory
from crmlab.search.served._record import DRAINED_ATTR, KIND_ATTR, Record, check_record
from crmlab.search.served._retry import fail_stale, retrying
from crmlab.search.storage import Heartbeat, check_storage_url, open_storage, redact

__all__ = ["EXCLUSIVE_ATTR", "Claim", "SearchWork", "serve", "serve_slots", "start_workers", "stop_workers"]

EXCLUSIVE_ATTR = "crmlab.exclusive"
"""A trial attribute: the run ran out of memory on a GPU it shared; only a worker with its GPU alone claims it."""
IDLE_POLL_MAX_S = 30.0
"""The longest wait between two looks at an empty queue (the wait doubles from 1 s)."""


class HandBack(BaseException):
    """Raised in the main thread by SIGTERM or SIGINT: hand the current trial back and leave."""


@dataclass
class Claim:
    """A trial this worker took: its study, trial id and number, the run it names and the study's record."""

    study: optuna.Study
    trial_id: int
    number: int
    attrs: dict[str, Any]
    record: Record


def serve(url: str, exit_when_idle: float | None = None, log: Callable[[str], None] = print) -> int:
    """Serve the storage at ``url`` in this process until idle for ``exit_when_idle`` seconds (forever if None).

    Returns:
        0 (idle or handed back after SIGTERM), 1 if any run it trained failed.

    Raises:
        CrmlabError: a study whose set-up this worker refuses (:func:`crmlab.search.served._record.check_record`),
            or a database unreachable for too long.
    """
    check_storage_url(url)
    storage = open_storage(url, Path.cwd(), Heartbeat())
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    checked: set[int] = set()
    failures = 0
    idle_since, delay = time.monotonic(), 1.0
    log(f"worker {socket.gethostname()}:{os.getpid()} serving {redact(url)}")
    try:
        with _stop_signals_hand_back():
            while True:
                claim = retrying(lambda: _claim(storage, checked, backend))
                if claim is None:
                    if exit_when_idle is not None and time.monotonic() - idle_since >= exit_when_idle:
                        log(f"worker {os.getpid()}: the queue was empty for {exit_when_idle:g} s; leaving")
                        return 1 if failures else 0
                    time.sleep(delay)
                    delay = min(2 * delay, IDLE_POLL_MAX_S)
                    continue
                if isinstance(claim, SearchWork):
                    _search(url, claim, log)
                else:
                    failures += not _train(storage, claim, backend, log)
                idle_since, delay = time.monotonic(), 1.0
    except HandBack as why:
        log(f"worker {os.getpid()}: {why}: leaving")
        return 1 if failures else 0


@contextlib.contextmanager
def _stop_signals_hand_back() -> Iterator[None]:
    """While inside, SIGTERM and SIGINT raise :class:`HandBack` in the main thread; the handlers before are put
    back on leaving."""

    def stop(signum: int, frame: Any) -> None:
        raise HandBack(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class SearchWork:
    """A served search with trials left to sample or waiting to be retried."""

    name: str
    record: Record


def _claim(storage: Any, checked: set[int], backend: str) -> Claim | SearchWork | None:
    """Take the oldest enqueued trial of any served ablation, or a served search with trials left (checking each
    study's record once), or None."""
    from crmlab.search.arch import budget_used

    slot = current_slot()
    shared = slot is not None and slot.share > 1
    for frozen in storage.get_all_studies():
        attr = frozen.user_attrs.get(KIND_ATTR)
        if attr is None or frozen.user_attrs.get(DRAINED_ATTR):
            continue
        record = Record.from_attr(attr)
        if frozen._study_id not in checked:
            check_record(record, frozen.study_name, backend)
            checked.add(frozen._study_id)
        if record.kind == "search":
            trials = storage.get_all_trials(frozen._study_id, deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if waiting or budget_used(trials) < (record.budget or 0):
                return SearchWork(frozen.study_name, record)
            continue
        study = optuna.load_study(study_name=frozen.study_name, storage=storage)
        fail_stale(study)
        for trial in storage.get_all_trials(frozen._study_id, deepcopy=False, states=(TrialState.WAITING,)):
            if trial.user_attrs.get(EXCLUSIVE_ATTR) and shared:
                continue  # it ran out of memory beside other runs: for a worker with its GPU alone
            if storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                storage.record_heartbeat(trial._trial_id)
                storage.set_trial_user_attr(trial._trial_id, "crmlab.host", f"{socket.gethostname()}:{os.getpid()}")
                progress = _progress(Path(record.runs_dir) / str(trial.user_attrs.get("crmlab.run_key")))
                if progress:
                    storage.set_trial_user_attr(trial._trial_id, "crmlab.resumed_from", progress)
                return Claim(study, trial._trial_id, trial.number, dict(trial.user_attrs), record)
    return None


def _search(url: str, work: SearchWork, log: Callable[[str], None]) -> None:
    """Sample and train the search's trials until its budget is used (Optuna's loop, as a local search worker)."""
    from crmlab.search.arch import serve_search

    rec = work.record
    log(f"{work.name}: serving the search")
    serve_search(
        rec.study_path,
        rec.overrides,
        url,
        rec.runs_dir,
        rec.tracking_uri,
        progress=lambda line: log(f"{work.name}: {line}"),
    )


def _progress(run_dir: Path) -> str:
    """``stage S epoch E``: the committed progress of an unfinished run folder (what a retried run resumes from), or
    ``""`` when it has none."""
    import json

    state = run_dir / "state.json"
    try:
        found = json.loads(state.read_text())
    except (OSError, ValueError):
        return ""
    if found.get("finished") or (found.get("stage", 0) == 0 and found.get("epoch", 0) == 0):
        return ""
    return f"stage {found.get('stage', 0)} epoch {found.get('epoch', 0)}"


def _train(storage: Any, claim: Claim, backend: str, log: Callable[[str], None]) -> bool:
    """Train the claimed run under heartbeats and report it; True unless it failed. A :class:`HandBack` fails the
    trial, enqueues the same run again and propagates."""
    from crmlab.search.ablation import run_task

    rec, attrs = claim.record, claim.attrs
    name, seed = attrs["crmlab.variant"], int(attrs["crmlab.seed"])
    label = f"{claim.study.study_name} trial {claim.number}: {name} seed={seed}"
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(rec.heartbeat_interval):
            # the database away: the lease may run out, and the run is retried elsewhere
            with contextlib.suppress(Exception):
                storage.record_heartbeat(claim.trial_id)

    threading.Thread(target=beat, name="crmlab-heartbeat", daemon=True).start()
    log(f"{label}: training")
    try:
        try:
            _check_key(rec, name, seed, attrs["crmlab.run_key"])
            run_task(
                (
                    rec.study_path,
                    rec.overrides,
                    rec.parameters,
                    name,
                    seed,
                    rec.runs_dir,
                    rec.tracking_uri,
                    rec.parent_run_id,
                    backend,
                )
            )
        except HandBack:
            stop.set()
            retrying(lambda: _hand_back(storage, claim, "handed back (SIGTERM)"))
            log(f"{label}: handed back (it resumes from its last checkpoint on the next worker)")
            raise
        except (Exception, CrmlabError) as exc:
            stop.set()
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if is_out_of_memory(exc) and not attrs.get(EXCLUSIVE_ATTR):
                retrying(lambda: _hand_back(storage, claim, f"out of memory: {reason}", exclusive=True))
                log(f"{label}: out of memory ({reason}); enqueued again for a worker with its GPU alone")
                return True
            retrying(lambda: _fail(storage, claim.trial_id, reason))
            log(f"{label}: FAILED: {reason}")
            return False
    finally:
        stop.set()
    value = _first_r(rec, name, seed, attrs["crmlab.run_key"])
    try:
        retrying(lambda: storage.set_trial_state_values(claim.trial_id, TrialState.COMPLETE, values=[value]))
    except UpdateFinishedTrialError:  # its lease ran out meanwhile: the retry finds the run finished at once
        log(f"{label}: finished, r = {value:.4f}, after its lease ran out (the retried trial reports it)")
        return True
    log(f"{label}: finished, r = {value:.4f}")
    return True


def _check_key(rec: Record, name: str, seed: int, key: str) -> None:
    """The run key this worker computes must be the driver's: other data or code would train another run."""
    from crmlab.runners.rundir import data_hashes, run_key
    from crmlab.search.ablation import worker_ablation

    ablation = worker_ablation(rec.study_path, rec.overrides, rec.parameters)  # the one run_task trains from
    mine = run_key(
        ablation.variant(name).graph, ablation.run_recipe(name, seed), data_hashes(ablation.datasets, ablation.tests)
    )
    if mine != key:
        raise CrmlabError(
            f"run key {mine} here, {key} on the driver: this machine's data files or code differ from the driver's"
        )


def _first_r(rec: Record, name: str, seed: int, key: str) -> float:
    import json

    summary = json.loads((Path(rec.runs_dir) / key / "result.json").read_text())
    return float(next(iter(summary["test_metrics"].values()))["pearson_r"])


def _fail(storage: Any, trial_id: int, reason: str) -> None:
    with contextlib.suppress(UpdateFinishedTrialError):  # already failed by its lease, and retried
        storage.set_trial_user_attr(trial_id, "crmlab.error", reason)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)


def _hand_back(storage: Any, claim: Claim, reason: str, exclusive: bool = False) -> None:
    """Fail the trial (``reason``) and enqueue the same run (same attributes; ``exclusive``: only for a worker that
    has its GPU alone) for the next worker."""
    try:
        storage.set_trial_user_attr(claim.trial_id, "crmlab.error", reason)
        storage.set_trial_state_values(claim.trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:  # its lease ran out meanwhile: Optuna has enqueued it again already
        return
    attrs = {k: v for k, v in claim.attrs.items() if k not in ("crmlab.host", "crmlab.error", "crmlab.resumed_from")}
    if exclusive:
        attrs[EXCLUSIVE_ATTR] = True
    claim.study.enqueue_trial({}, user_attrs=attrs)


def start_workers(
    url: str, slots: Sequence[Slot], exit_when_idle: float | None, backend: str | None
) -> list[subprocess.Popen[bytes]]:
    """Start one ``crmlab worker`` process per slot, each on its slot's GPUs (as ``--jobs`` places the local pool)."""
    procs = []
    for slot in slots:
        env = dict(os.environ)
        for key, value in slot.env().items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        cmd = [sys.executable, "-m", "crmlab.cli", "worker", "--storage", url, "--jobs", "1"]
        if exit_when_idle is not None:
            cmd += ["--exit-when-idle", str(exit_when_idle)]
        if backend:
            cmd += ["--backend", backend]
        procs.append(subprocess.Popen(cmd, env=env))
    return procs


def stop_workers(procs: Sequence[subprocess.Popen[bytes]], signum: int = signal.SIGTERM) -> int:
    """Send ``signum`` to the workers still running (SIGTERM: each hands its trial back) and wait for all; returns
    the worst exit status."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)
    return max((p.wait() for p in procs), default=0)


def serve_slots(url: str, slots: Sequence[Slot], exit_when_idle: float | None, backend: str | None) -> int:
    """Run one worker process per slot until they all leave; SIGTERM and Ctrl-C are passed on to them. Returns the
    worst exit status."""
    procs = start_workers(url, slots, exit_when_idle, backend)
    try:
        with _stop_signals_hand_back():
            return max(p.wait() for p in procs)
    except BaseException:
        return stop_workers(procs)
