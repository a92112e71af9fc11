"""What a driver stores for its workers, and the checks a worker makes before it trains anything.

A served study is an Optuna study in the shared RDB storage, named ``crmlab-ablation:<study key>``. Its user
attributes (:class:`Record`) hold what a worker needs to train any of its runs without a study file of its own: the
study file's path on the shared file system and its content hash, the ``--set`` overrides, the runs folder and its
marker, the MLflow tracking URI and parent run, the code fingerprint, the heartbeat and the host of the driver. A
worker refuses, in one line, the set-ups that corrupt or lose results (:func:`check_record`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from crmlab.registry import CrmlabError
from crmlab.search.storage import redact

__all__ = [
    "DRAINED_ATTR",
    "KIND_ATTR",
    "MARKER",
    "STUDY_PREFIX",
    "Record",
    "check_locking",
    "check_record",
    "code_fingerprint",
    "file_hash",
    "filesystem_type",
    "runs_marker",
]

STUDY_PREFIX = "crmlab-ablation:"
"""Optuna study names of served ablations: this prefix and the ablation's study key (a search's study is named
after the search, as without workers)."""
DRAINED_ATTR = "crmlab.drained"
"""The study user attribute ``crmlab queue --drain`` sets: workers claim no more of its runs."""
KIND_ATTR = "crmlab.served"
"""The study user attribute that holds a served study's :class:`Record` (as a dict)."""
MARKER = ".crmlab-runs-id"
"""The file in a runs folder that names it (a random id written once): workers check they see the driver's folder."""


@dataclass(frozen=True)
class Record:
    """What the driver of a served study stores for its workers (JSON-able). ``kind``: ``ablation`` (its runs are
    enqueued trials) or ``search`` (workers sample trials until ``budget`` is used)."""

    kind: str
    name: str
    study_path: str
    study_hash: str
    overrides: list[str]
    parameters: dict[str, int]
    runs_dir: str
    runs_id: str
    tracking_uri: str | None
    parent_run_id: str | None
    code: str
    backend: str
    driver_host: str
    storage_scheme: str
    heartbeat_interval: int
    budget: int | None = None

    @classmethod
    def of_driver(
        cls,
        kind: str,
        name: str,
        study_path: Path,
        overrides: list[str],
        runs_dir: Path,
        runs_id: str,
        tracking_uri: str | None,
        parent_run_id: str | None,
        storage_scheme: str,
        heartbeat_interval: int,
        parameters: dict[str, int] | None = None,
        budget: int | None = None,
    ) -> Record:
        """The record a driver in this process stores: the study file's absolute path and hash, this process's code
        fingerprint, Keras backend and host."""
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        return cls(
            kind=kind,
            name=name,
            study_path=str(Path(study_path).resolve()),
            study_hash=file_hash(Path(study_path)),
            overrides=list(overrides),
            parameters=dict(parameters or {}),
            runs_dir=str(runs_dir),
            runs_id=runs_id,
            tracking_uri=tracking_uri,
            parent_run_id=parent_run_id,
            code=code_fingerprint(backend),
            backend=backend,
            driver_host=socket.gethostname(),
            storage_scheme=storage_scheme,
            heartbeat_interval=heartbeat_interval,
            budget=budget,
        )

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attr(cls, value: dict[str, Any]) -> Record:
        return cls(**value)


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes (16 hex digits)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def code_fingerprint(backend: str) -> str:
    """A hash of what decides how a run trains besides its key: crmlab's installed source, the installed
    ``crmlab.blocks`` plugins (name, target and distribution version), and the Keras and backend versions. The
    version string (0.1.0) never changes, so the source itself is hashed."""
    import keras

    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        parts = file.relative_to(root).parts
        if parts[0] in ("tests", "bench", ".venv", "build") or any(p.startswith(".") for p in parts):
            continue
        h.update(str(file.relative_to(root)).encode())
        h.update(file.read_bytes())
    plugins = sorted(
        (ep.name, ep.value, ep.dist.version if ep.dist else "") for ep in metadata.entry_points(group="crmlab.blocks")
    )
    versions = {"keras": keras.__version__, "backend": backend, backend: _backend_version(backend)}
    h.update(json.dumps([plugins, versions]).encode())
    return h.hexdigest()[:16]


def _backend_version(backend: str) -> str:
    try:
        return metadata.version("jax" if backend == "jax" else backend)
    except metadata.PackageNotFoundError:
        return "?"


def runs_marker(runs_dir: Path, create: bool) -> str:
    """The id in ``runs_dir``'s marker file, written (once, atomically) when ``create``; ``""`` when absent."""
    marker = Path(runs_dir) / MARKER
    if create and not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: of two drivers starting at once, one writes the id and both read it
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(uuid.uuid4().hex)
    return marker.read_text().strip() if marker.exists() else ""


def filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path`` (``nfs4``, ``ext4``, ...) from ``/proc/mounts``; ``""`` if
    unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    target, best = str(Path(path).resolve()), ("", "")
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3:
            point = fields[1].replace("\\040", " ")
            if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(best[0]):
                best = (point, fields[2])
    return best[1]


def check_locking(runs_dir: Path) -> None:
    """Check that ``flock`` works in the runs folder: each run's lock is an ``flock`` on a file there, which is what
    keeps two workers from training one run folder at once. A mount without locks (NFS ``nolock``, some FUSE file
    systems) fails it here and is refused; on NFS, locks across machines also need a working lock service (NFSv4, or
    NFSv3 with lockd), which no single machine can check: the README says so.

    Raises:
        CrmlabError: ``flock`` fails in ``runs_dir``.
    """
    probe = Path(runs_dir) / f".crmlab-lock-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        with open(probe, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError as exc:
        kind = filesystem_type(Path(runs_dir)) or "this file system"
        raise CrmlabError(
            f"runs folder {runs_dir}: flock fails on {kind} ({exc.strerror}): the run lock cannot work; mount it "
            "with locking (NFSv4, or NFSv3 with lockd; not nolock)"
        ) from None
    finally:
        probe.unlink(missing_ok=True)


def check_record(record: Record, name: str, backend: str) -> None:
    """Refuse, in one line naming what to fix, a worker whose set-up would corrupt or lose the study's results.

    Raises:
        CrmlabError: an SQLite Optuna storage or MLflow store on another host than the driver's, a runs folder that
            is not the driver's (missing or another marker), other code than the driver's, or a study file changed
            since the driver stored it.
    """
    host = socket.gethostname()
    remote = host != record.driver_host
    if remote and record.storage_scheme == "sqlite":
        raise CrmlabError(
            f"{name}: the storage is an SQLite file on {record.driver_host}; workers on other machines need a "
            "PostgreSQL storage (postgresql://USER@HOST/DB)"
        )
    uri = record.tracking_uri or ""
    if remote and record.parent_run_id and (not uri or uri.startswith(("sqlite:", "file:")) or "://" not in uri):
        raise CrmlabError(
            f"{name}: MLflow logs to a local store on {record.driver_host} ({redact(uri) or './mlflow.db'}); "
            "workers on other machines need a tracking server (--tracking-uri http://HOST:PORT on the driver)"
        )
    runs = Path(record.runs_dir)
    found = runs_marker(runs, create=False)
    if found != record.runs_id:
        what = "has no marker" if not found else "is another folder (its marker differs)"
        raise CrmlabError(
            f"{name}: the runs folder {runs} {what}: mount the driver's runs folder at the same path on every machine"
        )
    check_locking(runs)
    code = code_fingerprint(backend)
    if code != record.code:
        raise CrmlabError(
            f"{name}: this worker's code ({code}: crmlab source, plugins, Keras and {backend} versions) differs from "
            f"the driver's ({record.code}): install the same crmlab, plugins and versions"
        )
    path = Path(record.study_path)
    if not path.is_file() or file_hash(path) != record.study_hash:
        raise CrmlabError(
            f"{name}: the study file {path} changed (or is missing) since the driver stored it: restart the driver"
        )
