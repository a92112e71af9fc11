"""MLflow logging through ``MlflowClient`` (no global active-run state, safe across processes).

The default store is local and embedded: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the
working directory with artifacts under ``./mlartifacts``; no server to start. ``--tracking-uri`` points elsewhere
(e.g. ``http://127.0.0.1:5000`` for a ``mlflow server``).

Artifacts that are files of a run folder (``model.keras``, ``result.json``, ...) are hard-linked into a local artifact
store on the same file system instead of copied (:meth:`Tracker.log_artifact`): the store lists and serves them as
usual, and the disk holds one copy. Elsewhere (a server, another file system) they are uploaded.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from crmlab.registry.errors import CrmlabError

__all__ = [
    "DIGEST_LENGTH",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "PARAM_VALUE_LIMIT",
    "Tracker",
    "default_tracking_uri",
    "flatten",
    "git_commit",
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

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, timestamp: float | None = None
    ) -> None:
        """Log metrics at ``step``; a fixed ``timestamp`` (seconds) makes re-logging the same point idempotent."""
        import time

        from mlflow.entities import Metric

        ms = int((timestamp if timestamp is not None else time.time()) * 1000)
        items = [Metric(k, float(v), ms, step or 0) for k, v in metrics.items() if v is not None and math.isfinite(v)]
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

    def _local_artifacts(self) -> Path | None:
        """The run's artifact folder when the store is a local ``file:`` folder, else ``None``."""
        uri = self.client.get_run(self.run_id).info.artifact_uri or ""
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            return None
        return Path(urllib.request.url2pathname(parsed.path))

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
