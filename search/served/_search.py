"""A search served to workers on many machines: ``crmlab search STUDY --storage URL --jobs 0`` publishes its Optuna
study (the :class:`~crmlab.search.served._record.Record` that workers check) and waits; each ``crmlab worker`` that
finds trials left to run samples and trains them through the search's own Optuna loop
(:func:`crmlab.search.arch.backends._optuna.serve_search`), so the sampler, the pruner and the heartbeat retry work as
with local workers."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crmlab.search.arch import PARENT_ATTR, Search
from crmlab.search.served._record import KIND_ATTR, Record, code_fingerprint, file_hash, runs_marker
from crmlab.search.storage import check_storage_url

__all__ = ["search_publisher"]


def search_publisher(search: Search, runs_dir: Path, url: str, tracking_uri: str | None) -> Callable[[Any], None]:
    """The ``publish`` of :class:`~crmlab.search.arch.SearchOptions` for a driven search: it stores the search's
    record on its Optuna study (and marks the runs folder) so that workers serve it."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    runs = Path(runs_dir).resolve()

    def publish(study: Any) -> None:
        record = Record(
            kind="search",
            name=search.doc.name,
            study_path=str(Path(search.path).resolve()),
            study_hash=file_hash(Path(search.path)),
            overrides=list(search.overrides),
            parameters={},
            runs_dir=str(runs),
            runs_id=runs_marker(runs, create=True),
            tracking_uri=tracking_uri,
            parent_run_id=study.user_attrs.get(PARENT_ATTR),
            code=code_fingerprint(backend),
            backend=backend,
            driver_host=socket.gethostname(),
            storage_scheme=check_storage_url(url),
            heartbeat_interval=search.doc.optuna.heartbeat.interval,
            budget=search.doc.trials,
        )
        study.set_user_attr(KIND_ATTR, record.to_attr())

    return publish
