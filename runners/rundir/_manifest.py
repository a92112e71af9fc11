"""The runs folder's manifest, ``RUNS_DIR/_manifest.jsonl``: which study owns which runs, and which studies are
under way, so ``crmlab runs`` can list a folder and tell the state no study will resume.

One JSON object per line, each appended in one ``write`` under an exclusive ``flock`` of the file (processes of
``--jobs``, ``--workers`` or other hosts on a shared folder append safely). The records:

* ``{"event": "start", "study": NAME, "kind": KIND, "key": STUDY_KEY, "time": T}``: a study command began
  (``kind``: ``train``, ``ablation`` or ``search``);
* ``{"event": "run", "study": ..., "kind": ..., "key": ..., "variant": LABEL, "run": RUN_KEY, "data": [HASH, ...],
  "time": T}``: the study started (or fetched) a run; written once per study, key, variant and run; ``data`` are
  the content hashes of the data the run reads (the token cache's keys);
* ``{"event": "finish", "study": ..., "kind": ..., "key": ..., "time": T}``: the study command finished.

A study is under way while its newest ``start`` or ``finish`` record is a ``start`` (a killed command never wrote
its ``finish``).
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "Owner", "read_manifest", "record_run", "record_study", "studies_under_way"]

MANIFEST = "_manifest.jsonl"


@dataclass(frozen=True)
class Owner:
    """Who starts a run: a study (its name, kind and key) and the run's label in it.

    Attributes:
        study: the study's name.
        kind: ``train``, ``ablation`` or ``search``.
        key: the study's key (what makes two invocations the same study; empty for a train study).
        variant: the run's label in the study (``canonical seed=0``, ``trial 3``; empty for a train study).
    """

    study: str
    kind: str
    key: str = ""
    variant: str = ""


def _append(runs_dir: Path, record: dict[str, Any], unless: Iterable[str] = ()) -> None:
    """Append ``record`` (with its time) unless a record already agrees with it on every field in ``unless``."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / MANIFEST, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        text = fh.read()
        same = list(unless)
        for line in text.splitlines() if same else []:
            old = _parse(line)
            if old is not None and all(old.get(k) == record.get(k) for k in same):
                return
        lead = b"\n" if text and not text.endswith(b"\n") else b""  # after a line cut short: start a new one
        fh.write(lead + json.dumps({**record, "time": round(time.time(), 3)}).encode() + b"\n")
        fh.flush()


def _parse(line: str | bytes) -> dict[str, Any] | None:
    try:
        found = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):  # a line cut short by a full disk: skipped
        return None
    return found if isinstance(found, dict) else None


def record_study(runs_dir: Path, owner: Owner, event: str) -> None:
    """Record that ``owner``'s study command began (``event`` ``start``) or finished (``finish``)."""
    _append(runs_dir, {"event": event, "study": owner.study, "kind": owner.kind, "key": owner.key})


def record_run(runs_dir: Path, owner: Owner, run: str, data: Iterable[str]) -> None:
    """Record that ``owner`` started (or fetched) the run keyed ``run``, which reads the data hashed ``data``."""
    record = {
        "event": "run",
        "study": owner.study,
        "kind": owner.kind,
        "key": owner.key,
        "variant": owner.variant,
        "run": run,
        "data": sorted(set(data)),
    }
    _append(runs_dir, record, unless=("event", "study", "key", "variant", "run"))


def read_manifest(runs_dir: Path) -> list[dict[str, Any]]:
    """The manifest's records in order (none if it does not exist)."""
    path = runs_dir / MANIFEST
    if not path.exists():
        return []
    with open(path) as fh:
        return [r for r in map(_parse, fh) if r is not None]


def studies_under_way(records: Iterable[dict[str, Any]]) -> set[str]:
    """Names of the studies whose newest ``start``/``finish`` record is a ``start``."""
    last: dict[str, str] = {}
    for r in records:
        if r.get("event") in ("start", "finish"):
            last[str(r.get("study"))] = r["event"]
    return {name for name, event in last.items() if event == "start"}
