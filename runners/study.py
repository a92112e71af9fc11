"""``crmlab train STUDY.yaml``: load and validate a train study, its graph and data, then run it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry import yamlio
from registry.errors import Issue, SpecErrors
from registry.patch import parse_assignment, set_path
from registry.spec import GraphSpec, load_graph
from registry.validate import resolve_graph
from runners import data as data_mod
from runners.recipe import TrainStudy, inline_recipe, parse_train_study


def default_runs_dir() -> Path:
    return Path(os.environ.get("CRMLAB_RUNS", "crmlab-runs"))


def apply_overrides(doc: Any, assignments: Sequence[str], file: str) -> Any:
    """Apply ``--set KEY=VALUE`` assignments to a study document (errors name the flag and the key)."""
    for text in assignments:
        key, value = parse_assignment(text)
        doc = set_path(doc, key, value, file="--set", where=key, create=True)
    return doc


def _blame_flag(issue: Issue, keys: Sequence[str]) -> Issue:
    """An issue at (or under) a key set by ``--set`` is reported against the flag, not the file."""
    if any(issue.path == k or issue.path.startswith(f"{k}.") or k.startswith(f"{issue.path}.") for k in keys):
        return Issue("--set", issue.path, issue.message)
    return issue


@dataclass
class LoadedStudy:
    """A validated study with its resolved graph and loaded data, ready to train."""

    study: TrainStudy
    graph: GraphSpec
    datasets: dict[str, data_mod.Dataset]
    tests: dict[str, data_mod.Dataset]


def load_train_study(path: str | Path, overrides: Sequence[str] = ()) -> LoadedStudy:
    """Read, override, validate; resolve the graph; load and encode every data and test set (cached)."""
    path = Path(path)
    doc = yamlio.load(path)
    if isinstance(doc, dict):
        doc = inline_recipe(doc, path.parent, str(path))
    doc = apply_overrides(doc, overrides, str(path))
    keys = [parse_assignment(o)[0] for o in overrides]
    try:
        study = parse_train_study(doc, str(path))
    except SpecErrors as exc:
        raise SpecErrors(_blame_flag(i, keys) for i in exc.issues) from None
    base = path.parent
    graph = resolve_graph(load_graph(base / study.graph))
    length = graph.inputs[next(iter(graph.inputs))].shape[0]
    datasets = {
        name: data_mod.load(src, length=length, base_dir=base, name=name, key=f"data.{name}")
        for name, src in study.data.items()
    }
    tests = {
        name: data_mod.load(src, length=length, base_dir=base, name=name, key=f"test_sets.{name}")
        for name, src in study.test_sets.items()
    }
    return LoadedStudy(study, graph, datasets, tests)
