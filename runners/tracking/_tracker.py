"""MLflow logging through ``MlflowClient`` (no global active-run state, safe across processes).

The default store is local and embedded: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the
working directory with artifacts under ``./mlartifacts``; no server to start. ``--tracking-uri`` points elsewhere
(e.g. ``http://127.0.0.1:5000`` for a ``mlflow server``).

Artifacts that are files of a run folder (``result.json``, the Keras file of the run's logged model, ...) are
hard-linked into a local artifact store on the same file system instead of copied (:meth:`Tracker.log_artifact`,
:meth:`Tracker.log_model`): the store lists and serves them as usual, and the disk holds one copy. Elsewhere (a
server, another file system) they are uploaded.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from crmlab.registry import CrmlabError

__all__ = [
    "DIGEST_LENGTH",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "PARAM_VALUE_LIMIT",
    "Tracker",
    "default_tracking_uri",
    "flatten",
    "git_commit",
    "open_parent_run",
]

PARAM_VALUE_LIMIT = 6000


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def flatten(doc: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": [1, 2]}}`` -> ``{"a.b.0": "1", "a.b.1": "2"}`` (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    if isinstance(doc, Mapping):
        for k, v in doc.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(doc, list | tuple) and doc and any(isinstance(v, Mapping | list) for v in doc):
        for i, v in enumerate(doc):
            out.update(flatten(v, f"{prefix}.{i}"))
    else:
        out[prefix] = str(list(doc) if isinstance(doc, tuple) else doc)[:PARAM_VALUE_LIMIT]
    return out


def git_commit(path: Path) -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


@contextlib.contextmanager
def _quick_failure() -> Iterator[None]:
    """For the first request to a store: few retries and a short timeout, so a wrong URI fails in seconds
    (MLflow's defaults retry for minutes). Values the user set in the environment are kept."""
    defaults = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
    added = {k: v for k, v in defaults.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _local_folder(uri: str) -> Path | None:
    """The folder of a local ``file:`` artifact URI, else ``None`` (a server, a cloud store)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(urllib.request.url2pathname(parsed.path))


def _store_files(local: Path, target: Path, links: Mapping[str, Path]) -> None:
    """Put the files of folder ``local`` into the local artifact folder ``target``: those named in ``links`` as hard
    links to their run-folder file (a copy across file systems), the others copied."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = path.relative_to(local).as_posix()
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        if rel in links:
            try:
                os.link(links[rel], dest)
                continue
            except OSError:  # another file system, or links not supported
                pass
        shutil.copyfile(path, dest)


DIGEST_LENGTH = 36
"""Hex digits of a data set's content hash shown as its MLflow dataset digest (the field's size)."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""Experiment tag value that makes the MLflow 3 UI open an experiment on its runs (not on GenAI traces)."""


class Tracker:
    """One MLflow run: created (or resumed by id), logged to, ended.

    Args:
        tracking_uri: MLflow tracking URI (default: :func:`default_tracking_uri`).
        experiment: experiment name (created if missing).
    """

    def __init__(self, tracking_uri: str | None, experiment: str) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri or default_tracking_uri()
        self._mlflow = mlflow
        for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..." on stderr
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            with _quick_failure():
                found = self.client.get_experiment_by_name(experiment)
            if found is None:
                artifacts = None
                if self.uri.startswith("sqlite:///"):
                    artifacts = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
            else:
                self.experiment_id = found.experiment_id
            if found is None or EXPERIMENT_KIND_TAG not in found.tags:  # the UI opens on runs, not GenAI traces
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        except Exception as exc:  # connection refused, bad URI, ...: a user-fixable input
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CrmlabError(f"--tracking-uri: cannot use MLflow tracking store {self.uri}: {first}") from None
        self.run_id: str | None = None

    def start(self, run_name: str, tags: Mapping[str, str], run_id: str | None = None) -> str:
        """Create a run, or reopen ``run_id`` (a resumed training finishes its own run)."""
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
        else:
            self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags)).info.run_id
        return self.run_id

    def unfinished_run(self, tags: Mapping[str, str]) -> str | None:
        """The newest run of this experiment still RUNNING with all of ``tags``, or None.

        A process killed between creating its run and recording the id leaves such a run behind; the next attempt
        at the same work reopens it instead of leaving it RUNNING forever beside a duplicate.
        """
        from mlflow.entities import ViewType

        (key, value), *others = tags.items()
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{key}` = '{value}' and attributes.status = 'RUNNING'",
            run_view_type=ViewType.ACTIVE_ONLY,
            order_by=["attributes.start_time DESC"],
        )
        found = (r for r in runs if all(r.data.tags.get(k) == v for k, v in others))
        return next((r.info.run_id for r in found), None)

    def start_or_reopen(
        self, run_name: str, tags: Mapping[str, str], run_id: str | None, match: tuple[str, ...]
    ) -> str:
        """Reopen ``run_id``, else the newest run still RUNNING with the same ``match`` tags (a process killed between
        creating a study's parent run and recording its id), else create the run; returns its id."""
        reopen = run_id or self.unfinished_run({k: tags[k] for k in match})
        return self.start(run_name, tags, reopen)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(
        self,
        metrics: Mapping[str, float],
        step: int | None = None,
        timestamp: float | None = None,
        model_id: str | None = None,
    ) -> None:
        """Log metrics at ``step``; a fixed ``timestamp`` (seconds) makes re-logging the same point idempotent; with
        ``model_id`` they are also the metrics of that logged model (the UI's "Logged models" table)."""
        import time

        from mlflow.entities import Metric

        ms = int((timestamp if timestamp is not None else time.time()) * 1000)
        items = [
            Metric(k, float(v), ms, step or 0, model_id=model_id, run_id=self.run_id if model_id else None)
            for k, v in metrics.items()
            if v is not None and math.isfinite(v)
        ]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i : i + 500])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        """Log the file ``path`` (under ``subdir``): hard-linked into a local artifact store on the same file system
        (one copy on disk), else copied or uploaded by MLflow."""
        target = self._local_artifacts()
        if target is not None:
            dest = target / (subdir or "") / Path(path).name
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.unlink(missing_ok=True)
                os.link(path, dest)
                return
            except OSError:  # another file system, or links not supported: MLflow copies it
                pass
        self.client.log_artifact(self.run_id, str(path), subdir)

    def log_model(self, name: str, save: Callable[[Path, Any], None], links: Mapping[str, Path]) -> str:
        """Log an MLflow model as a logged model of this run (MLflow 3: the run's "Logged models"); returns its id.

        The client-side steps of ``mlflow.<flavor>.log_model``, through this tracker's client: create the logged
        model, save it, store its files, record it as the run's output and mark it ready (``FAILED`` if saving or
        storing fails).

        Args:
            name: the logged model's name.
            save: writes the model folder: called with a path that does not exist yet and the ``mlflow.models.Model``
                metadata to save (model id, run id, artifact location), e.g. by ``mlflow.pyfunc.save_model``.
            links: files of the saved folder (relative paths) that are copies of these run-folder files: a local
                artifact store on the same file system hard-links the run-folder file instead.
        """
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        logged = self.client.create_logged_model(self.experiment_id, name=name, source_run_id=self.run_id)
        meta = Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=self.run_id,
            model_id=logged.model_id,
        )
        try:
            with tempfile.TemporaryDirectory(prefix="crmlab-model-") as tmp:
                local = Path(tmp) / "model"
                save(local, meta)
                target = _local_folder(logged.artifact_location)
                if target is None:
                    self.client.log_model_artifacts(logged.model_id, str(local))
                else:
                    _store_files(local, target, links)
            self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step=0)])
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        return logged.model_id

    def _local_artifacts(self) -> Path | None:
        """The run's artifact folder when the store is a local ``file:`` folder, else ``None``."""
        return _local_folder(self.client.get_run(self.run_id).info.artifact_uri or "")

    def log_datasets(self, datasets: list[tuple[str, str, int, str]]) -> None:
        """Record the data sets a run used as its MLflow inputs (the UI's Datasets column).

        Args:
            datasets: ``(name, content hash, rows, context)`` each; context ``training``, ``validation`` or
                ``test``. The digest shown is the content hash's first :data:`DIGEST_LENGTH` hex digits (MLflow's
                digest field holds 36 characters), the same hash the run key is made of.
        """
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [
            DatasetInput(
                Dataset(name, digest[:DIGEST_LENGTH], "crmlab", name, profile=json.dumps({"num_rows": rows})),
                [InputTag("mlflow.data.context", context)],
            )
            for name, digest, rows, context in datasets
        ]
        self.client.log_inputs(self.run_id, datasets=inputs)

    def log_table(self, columns: Mapping[str, list[Any]], artifact_file: str) -> None:
        """A table artifact (MLflow's ``log_table``), which the UI shows as a sortable table.

        Args:
            columns: column name -> values (equal lengths).
            artifact_file: its name in the run's artifacts (``.json``).
        """
        import pandas as pd

        self.client.log_table(self.run_id, pd.DataFrame(dict(columns)), artifact_file)

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


def open_parent_run(
    tracking_uri: str | None,
    experiment: str,
    run_name: str,
    runs_dir: Path,
    tags: Mapping[str, str],
    key_tag: str,
    run_id: str | None,
    params: Any = None,
) -> tuple[Tracker, str]:
    """A study's MLflow parent run (an ablation study's, a search's), which every invocation of the study's command
    reopens: by the id an earlier one recorded, else by its tags (:meth:`Tracker.start_or_reopen`), else created.

    Args:
        tracking_uri: MLflow tracking URI (default: :func:`default_tracking_uri`).
        experiment: the experiment (the study's name).
        run_name: the run's name.
        runs_dir: the runs folder, tagged ``crmlab.runs_dir`` (resolved).
        tags: the run's other tags; they hold ``key_tag``.
        key_tag: the tag of the study's key; with ``crmlab.runs_dir`` it finds a run left RUNNING by a kill.
        run_id: the parent run's id recorded by an earlier invocation, if any.
        params: a document logged as the run's parameters (:func:`flatten`); ``None``: none logged.

    Returns:
        The tracker holding the run, and the run's id.
    """
    tracker = Tracker(tracking_uri, experiment)
    tags = {**tags, "crmlab.runs_dir": str(runs_dir.resolve())}
    run_id = tracker.start_or_reopen(run_name, tags, run_id, (key_tag, "crmlab.runs_dir"))
    if params is not None:
        tracker.log_params(flatten(params))
    return tracker, run_id
