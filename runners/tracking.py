"""MLflow logging through ``MlflowClient`` (no global active-run state, safe across processes).

The default store is local and embedded: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the
working directory with artifacts under ``./mlartifacts``; no server to start. ``--tracking-uri`` points elsewhere
(e.g. ``http://127.0.0.1:5000`` for a ``mlflow server``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from crmlab.registry.errors import CrmlabError

__all__ = ["PARAM_VALUE_LIMIT", "Tracker", "default_tracking_uri", "flatten", "git_commit"]

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
        self.client.log_artifact(self.run_id, str(path), subdir)

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)
