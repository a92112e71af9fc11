"""Reading a search that has run from its Optuna storage, without creating or changing anything (``crmlab confirm``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from crmlab.registry import CrmlabError
from crmlab.search.arch._leaderboard import TrialRow
from crmlab.search.arch._optuna_rows import trial_rows
from crmlab.search.arch._optuna_study import CANONICAL_ATTR, KEY_ATTR
from crmlab.search.arch._study import Search
from crmlab.search.storage import default_storage, open_storage, redact

__all__ = ["finished_trials"]


def finished_trials(
    search: Search, runs_dir: Path, storage: str | None = None
) -> tuple[list[TrialRow], dict[str, Any]]:
    """The leaderboard rows of a search that has run and canonical's record, read from the search's Optuna study.

    Args:
        search: the loaded search (``backend: optuna``).
        runs_dir: the runs folder (its ``optuna.db`` is the default storage).
        storage: the ``--storage`` URL the search ran with (``None``: the default SQLite file).

    Returns:
        The rows of the finished trials (:func:`~crmlab.search.arch._optuna_rows.trial_rows`, the Pareto front
        marked) and canonical's record
        (``value``, ``tests`` metrics, ``run_key``).

    Raises:
        CrmlabError: one line: not an Optuna search, never run in that storage, or made from another search.
    """
    file = str(search.path)
    if search.doc.backend != "optuna":
        raise CrmlabError(f"{file}: backend: {search.doc.backend}: only Optuna searches keep their trials in a storage")
    url = storage or default_storage(runs_dir)
    never = f"{file}: search '{search.doc.name}' has not run with {redact(url)}; run crmlab search {file} first"
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise CrmlabError(never)
    rdb = open_storage(storage, runs_dir, search.doc.optuna.heartbeat)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        try:
            study = optuna.load_study(study_name=search.doc.name, storage=rdb)
        except KeyError:
            raise CrmlabError(never) from None
        if study.user_attrs.get(KEY_ATTR) != search.key:
            raise CrmlabError(
                f"{file}: study '{search.doc.name}' in {redact(url)} holds a different search (its graph, recipe,"
                " data, space or objective changed since it ran)"
            )
        canonical = study.user_attrs.get(CANONICAL_ATTR)
        if canonical is None:
            raise CrmlabError(f"{never} (canonical has not finished)")
        return trial_rows(study, search), canonical
    finally:
        rdb.engine.dispose()
