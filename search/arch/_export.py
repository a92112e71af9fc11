"""Export of a search's best trial as a ``kind: train`` study that ``crmlab train`` trains."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crmlab.registry import CrmlabError, yamlio
from crmlab.runners.data import DataSource
from crmlab.search.arch._leaderboard import TrialRow, best_row, short_value
from crmlab.search.arch._study import Search

__all__ = ["check_export_path", "export_best", "export_best_trial"]


def export_best(search: Search, values: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    """Write the trial of ``values`` as a ``kind: train`` study ``out`` with its graph spec beside it
    (``<stem>.graph.yaml``); data paths are rewritten relative to ``out``. ``crmlab train out`` trains it.

    Returns:
        The study file and the graph spec file written.
    """
    spec = search.variant(values)
    out = out.resolve()
    graph_file = out.with_name(f"{out.stem}.graph.yaml")
    base = search.path.parent.resolve()
    study = {
        "kind": "train",
        "name": f"{search.doc.name}_best",
        "description": f"best trial of search {search.doc.name}: "
        + ", ".join(f"{k}={short_value(v)}" for k, v in search.space.active(values).items()),
        "graph": graph_file.name,
        "data": {n: _relocated(s, base, out.parent) for n, s in search.doc.data.items()},
        "test_sets": {n: _relocated(s, base, out.parent) for n, s in search.doc.test_sets.items()},
        "recipe": spec.recipe_doc,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    graph_file.write_text(yamlio.dumps(spec.graph_doc))
    out.write_text(yamlio.dumps(study))
    return out, graph_file


def export_best_trial(search: Search, rows: Sequence[TrialRow], out: Path) -> tuple[TrialRow, Path, Path]:
    """:func:`export_best` for the best complete trial of ``rows``; returns it, the study and the graph file.

    Raises:
        CrmlabError: no trial is complete.
    """
    best = best_row(rows, search.direction)
    if best is None:
        raise CrmlabError(f"--export: no trial of {search.doc.name} is complete yet; nothing to export")
    return best, *export_best(search, best.params, out)


def _relocated(source: DataSource, base: Path, folder: Path) -> dict[str, Any]:
    """``source`` as a document whose file names, relative to ``base`` before, are relative to ``folder``."""
    doc = source.model_dump(mode="json", exclude_defaults=True)
    doc["path"] = os.path.relpath(base / source.path, folder)
    if source.values_file:
        doc["values_file"] = os.path.relpath(base / source.values_file, folder)
    return doc


def check_export_path(arg: str | None) -> Path | None:
    """``--export``: a ``.yaml`` file whose folder exists or can be made (checked before anything runs)."""
    if arg is None:
        return None
    path = Path(arg)
    if path.suffix not in (".yaml", ".yml"):
        raise CrmlabError(f"--export: {arg}: write the study to a .yaml file")
    existing = next((p for p in path.absolute().parents if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise CrmlabError(f"--export: cannot write {arg} ({existing} is not a writable folder)")
    return path
