"""A search served to workers on many machines: ``crmlab search STUDY --storage URL --jobs 0`` publishes its Optuna
study (the :class:`~crmlab.search.served._record.Record` that workers check) and waits; each ``crmlab worker`` that
finds trials left to run samples and trains them through the search's own Optuna loop
(:func:`crmlab.search.arch.backends._optuna.serve_search`), so the sampler, the pruner and the heartbeat retry work as
with local workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from crmlab.search.arch import PARENT_ATTR, Search
from crmlab.search.served._record import KIND_ATTR, Record, runs_marker
from crmlab.search.storage import check_storage_url

__all__ = ["search_publisher"]


def search_publisher(search: Search, runs_dir: Path, url: str, tracking_uri: str | None) -> Callable[[Any], None]:
    """The ``publish`` of :class:`~crmlab.search.arch.SearchOptions` for a driven search: it stores the search's
    record on its Optuna study (and marks the runs folder) so that workers serve it."""
    runs = Path(runs_dir).resolve()

    def publish(study: Any) -> None:
        record = Record.of_driver(
            "search",
            search.doc.name,
            search.path,
            search.overrides,
            runs,
            runs_marker(runs, create=True),
            tracking_uri,
            study.user_attrs.get(PARENT_ATTR),
            check_storage_url(url),
            search.doc.optuna.heartbeat.interval,
            budget=search.doc.trials,
        )
        study.set_user_attr(KIND_ATTR, record.to_attr())

    return publish
