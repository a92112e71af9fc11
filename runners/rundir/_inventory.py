"""``crmlab runs``: what a runs folder holds (each run's size, state, study and variant) and what it no longer needs.

A run is ``finished``, ``unfinished`` (``running`` while a process holds its lock) or ``pruned`` (its state was
dropped: a pruned trial, or a prune here). Its study and variant come from the folder's manifest
(:mod:`crmlab.runners.rundir._manifest`). Sizes count each file once, however many hard links it has (an MLflow artifact
linked to a run folder's file is not counted twice).

:func:`prune_plan` lists what a clean-up deletes, and :func:`prune` deletes it:

* the resumable state of unfinished runs that no study in the folder will resume: runs whose studies have all
  finished since (or that no study recorded); runs whose lock is held are skipped;
* resumable state left in finished runs (``stage*-start.npz``; checkpoints, unless ``CRMLAB_KEEP_STATE`` is set) and
  in pruned runs (a kill during a clean-up);
* stage caches (``_stages/<stage key>``) that no unfinished run needs, when no study is under way, and temporary
  folders of stage caches an hour old;
* ``_keras_tuner/<name>-<key>`` folders of finished searches;
* token caches (files or folders named by their key in :func:`crmlab.runners.data._token_cache.default_cache_dir`) that
  no run in the folder reads and that are 30 days old, and temporary ones an hour old.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from crmlab.runners.data import default_cache_dir
from crmlab.runners.rundir._checkpoint import CheckpointState
from crmlab.runners.rundir._manifest import read_manifest, studies_under_way
from crmlab.runners.rundir._retention import discard_unfinished, keep_state, resumable_files, run_lock

__all__ = [
    "TOKEN_CACHE_AGE_S",
    "Removal",
    "RunInfo",
    "folder_size",
    "list_runs",
    "manifest_summary",
    "prune",
    "prune_plan",
    "size_text",
]

TOKEN_CACHE_AGE_S = 30 * 24 * 3600
"""A token cache file no run in the folder reads is deleted once it is this old (seconds since written)."""
_TMP_AGE_S = 3600
_RUN_NAME = re.compile(r"[0-9a-f]{16}")
_TOKEN_NAME = re.compile(r"[0-9a-f]{64}(\.npz)?")


@dataclass
class RunInfo:
    """One run folder.

    Attributes:
        key: the run key (the folder's name).
        path: the folder.
        size: bytes on disk.
        state: ``finished``, ``unfinished``, ``running`` or ``pruned``.
        owners: ``(study, kind, variant)`` of every study that recorded the run.
        stage_keys: the stage caches the run may load.
    """

    key: str
    path: Path
    size: int
    state: str
    owners: list[tuple[str, str, str]] = field(default_factory=list)
    stage_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Removal:
    """One thing :func:`prune` deletes: ``path`` (a run folder for ``drop``: its resumable state), its size and why."""

    path: Path
    size: int
    reason: str
    drop: bool = False


def folder_size(path: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes of the files under ``path`` (or of the file), each inode counted once (``seen`` shares the count)."""
    seen = set() if seen is None else seen
    total = 0
    walk = [(str(path.parent), [], [path.name])] if path.is_file() else os.walk(path)
    for root, _, files in walk:
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def size_text(n: int) -> str:
    """``n`` bytes as ``12.3 MB`` (powers of 1,000)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _is_held(run_dir: Path) -> bool:
    with run_lock(run_dir, wait=False) as held:
        return not held


def list_runs(runs_dir: Path) -> list[RunInfo]:
    """Every run folder of ``runs_dir`` (sorted by study, variant, key) with its size, state and owners."""
    owners: dict[str, list[tuple[str, str, str]]] = {}
    for r in read_manifest(runs_dir):
        if r.get("event") == "run":
            entry = (str(r.get("study", "")), str(r.get("kind", "")), str(r.get("variant", "")))
            found = owners.setdefault(str(r.get("run")), [])
            if entry not in found:
                found.append(entry)
    runs = []
    for path in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        if not (path.is_dir() and _RUN_NAME.fullmatch(path.name) and (path / "state.json").exists()):
            continue
        state = CheckpointState(path)
        if state["finished"]:
            kind = "finished"
        elif state["pruned"]:
            kind = "pruned"
        else:
            kind = "running" if _is_held(path) else "unfinished"
        runs.append(RunInfo(path.name, path, folder_size(path), kind, owners.get(path.name, []), state["stage_keys"]))
    return sorted(runs, key=lambda r: (r.owners[:1], r.key))


def _size(paths: list[Path]) -> int:
    seen: set[tuple[int, int]] = set()
    return sum(folder_size(p, seen) for p in paths)


def _old(path: Path, age: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > age
    except OSError:
        return False


def prune_plan(runs_dir: Path, cache_dir: Path | None = None) -> list[Removal]:
    """What :func:`prune` would delete in ``runs_dir`` (and the token cache ``cache_dir``, default: the default
    token cache), in the order it deletes it."""
    runs = list_runs(runs_dir)
    records = read_manifest(runs_dir)
    under_way = studies_under_way(records)
    plan: list[Removal] = []
    kept: list[RunInfo] = []
    for run in runs:
        files = resumable_files(run.path)
        if run.state == "unfinished":
            alive = [s for s, _, _ in run.owners if s in under_way]
            if alive:
                kept.append(run)
                continue
            why = "no study recorded it" if not run.owners else "its studies have finished"
            plan.append(Removal(run.path, _size(files), f"unfinished run {run.key}: {why}", drop=True))
        elif run.state == "running":
            kept.append(run)
        elif files:
            if run.state == "finished" and keep_state():
                files = [f for f in files if not f.name.startswith("ckpt-")]
            plan += [Removal(f, _size([f]), f"{run.state} run {run.key}: resumable state left") for f in files]
    stages = runs_dir / "_stages"
    if stages.is_dir():
        needed = {k for run in kept for k in run.stage_keys}
        unknown = any(not run.stage_keys for run in kept)
        for cache in sorted(stages.iterdir()):
            if ".tmp" in cache.name:
                if _old(cache, _TMP_AGE_S):
                    plan.append(Removal(cache, _size([cache]), "stage cache: temporary folder left"))
            elif not under_way and not unknown and cache.name not in needed:
                plan.append(Removal(cache, _size([cache]), "stage cache: no unfinished run needs it"))
    finished = {(str(r["study"]), str(r["key"])) for r in records if r.get("event") == "finish"}
    for study, key in sorted(finished):
        tuner = runs_dir / "_keras_tuner" / f"{study}-{key[:12]}"
        if study not in under_way and tuner.is_dir():
            plan.append(Removal(tuner, _size([tuner]), f"KerasTuner state of the finished search {study}"))
    plan += _token_caches(records, cache_dir or default_cache_dir())
    return plan


def _token_caches(records: list[dict], cache_dir: Path) -> list[Removal]:
    if not cache_dir.is_dir():
        return []
    used = {h for r in records if r.get("event") == "run" for h in r.get("data", [])}
    plan = []
    for path in sorted(cache_dir.iterdir()):
        if path.name.endswith(".tmp") and _old(path, _TMP_AGE_S):
            plan.append(Removal(path, _size([path]), "token cache: temporary file left"))
        elif _TOKEN_NAME.fullmatch(path.name) and path.name[:64] not in used and _old(path, TOKEN_CACHE_AGE_S):
            plan.append(Removal(path, _size([path]), "token cache: no run here reads it, 30 days old"))
    return plan


def prune(plan: list[Removal]) -> list[Removal]:
    """Delete what ``plan`` lists; an unfinished run whose lock is now held, or that has finished, is skipped.

    Returns:
        What was deleted.
    """
    done = []
    for item in plan:
        if item.drop:
            if not discard_unfinished(item.path):
                continue
        elif item.path.is_dir():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        done.append(item)
    return done


def manifest_summary(runs_dir: Path) -> str:
    """One line: the studies the manifest knows and which are under way."""
    records = read_manifest(runs_dir)
    studies = sorted({str(r.get("study")) for r in records if r.get("event") in ("start", "run")})
    under_way = studies_under_way(records)
    if not studies:
        return "no study recorded in this folder's manifest"
    return "studies: " + ", ".join(f"{s} (under way)" if s in under_way else s for s in studies)
