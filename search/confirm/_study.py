"""The confirmed study: a search's chosen trials as the variants of a ``kind: ablation`` study against canonical.

A trial is a patch of the search's base graph and recipe (:meth:`crmlab.search.arch.Search.variant`), so it is one
more ablation variant (``trial_N``). The study has the A/A control (``controls: {replicate: true}``) and adaptive
seeds numbered from one past every seed the search trained its trials on (``seeds: {initial, max, first}``): the
selection seed's runs, whose scores chose the trials, never enter a verdict. The file is a normal ablation study;
``crmlab ablate`` re-runs or extends it (e.g. ``--set seeds.max=8``), reusing its runs by their keys.

Where it is written (:func:`confirmation_path`): beside the search study, ``NAME.confirm.yaml`` for ``NAME.yaml``,
with the graph and data paths relative to it; when the search study's folder is not writable, in the runs folder,
``RUNS_DIR/_confirm/NAME.confirm.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crmlab.registry import yamlio
from crmlab.search.ablation import AdaptiveSeeds
from crmlab.search.arch import TrialRow

__all__ = [
    "DEFAULT_SEEDS",
    "confirmation_doc",
    "confirmation_path",
    "fresh_seeds",
    "selection_seeds",
    "variant_name",
    "write_confirmation",
]

DEFAULT_SEEDS = (3, 6)
"""Adaptive confirmation seeds, ``(initial, max)``: three to start, at most six per trial."""

ABLATION_METRICS = ("pearson_r", "spearman_rho", "r2")
"""The primary metrics an ablation's verdicts can be read from."""


def variant_name(number: int) -> str:
    """The confirmed study's variant of trial ``number``: ``trial_7``."""
    return f"trial_{number}"


def selection_seeds(search: Any, chosen: Sequence[TrialRow]) -> list[int]:
    """The seeds the search trained canonical and the ``chosen`` trials on (``recipe.seed``, patched or not)."""
    seeds = {search.canonical[1].seed, *(search.variant(r.params).recipe.seed for r in chosen)}
    return sorted(seeds)


def fresh_seeds(search: Any, chosen: Sequence[TrialRow], initial: int, most: int) -> AdaptiveSeeds:
    """Adaptive seeds ``{initial, max: most}`` numbered from one past the largest selection seed, so that no
    confirmation run repeats a run the search selected on."""
    return AdaptiveSeeds(initial=initial, max=most, first=max(selection_seeds(search, chosen)) + 1)


def confirmation_path(search: Any, runs_dir: Path) -> Path:
    """``NAME.confirm.yaml`` beside the search study ``NAME.yaml`` if its folder is writable, else in
    ``RUNS_DIR/_confirm/``."""
    name = f"{search.path.stem}.confirm.yaml"
    folder = search.path.resolve().parent
    if os.access(folder, os.W_OK | os.X_OK):
        return folder / name
    return runs_dir.resolve() / "_confirm" / name


def _moved(name: str, base: Path, folder: Path) -> str:
    """A file name relative to ``base`` made relative to ``folder`` (an absolute one stays as it is)."""
    return name if Path(name).is_absolute() else os.path.relpath(base / name, folder)


def _relocated(source: Any, base: Path, folder: Path) -> dict[str, Any]:
    """A data source's document with its file names, relative to ``base`` before, made relative to ``folder``."""
    doc = source.model_dump(mode="json", exclude_defaults=True)
    doc["path"] = _moved(source.path, base, folder)
    if source.values_file:
        doc["values_file"] = _moved(source.values_file, base, folder)
    return doc


def confirmation_doc(search: Any, chosen: Sequence[TrialRow], seeds: AdaptiveSeeds, folder: Path) -> dict[str, Any]:
    """The confirmed study's document, its file names relative to ``folder`` (where it is written).

    Args:
        search: the loaded search.
        chosen: the trials to confirm (:func:`~crmlab.search.confirm._choose.choose_trials`).
        seeds: the confirmation seeds (:func:`fresh_seeds`).
        folder: the folder the study file goes to.

    Returns:
        A ``kind: ablation`` document: the search's graph, data, test sets and recipe, one variant per trial (its
        patch), the A/A control, the seeds, and the primary metric of the search's objective (Pearson r when the
        objective is a loss).
    """
    base = search.path.resolve().parent
    metric = search.metric.removeprefix("val_")
    numbers = ", ".join(str(r.number) for r in chosen)
    selected = ", ".join(map(str, selection_seeds(search, chosen)))
    patches = {variant_name(r.number): search.variant(r.params).patch for r in chosen}
    return {
        "kind": "ablation",
        "name": f"{search.doc.name}_confirm",
        "description": f"Confirmation of trials {numbers} of search {search.doc.name} ({search.path.name}) against"
        f" canonical on fresh seeds (the search selected on seed {selected}). Written by crmlab confirm; crmlab"
        " ablate re-runs or extends it.",
        "graph": _moved(search.doc.graph, base, folder),
        "data": {n: _relocated(s, base, folder) for n, s in search.doc.data.items()},
        "test_sets": {n: _relocated(s, base, folder) for n, s in search.doc.test_sets.items()},
        "recipe": search.doc.recipe,
        "seeds": seeds.model_dump(mode="json") | {"first": seeds.first},
        "controls": {"replicate": True},
        "metric": metric if metric in ABLATION_METRICS else "pearson_r",
        "variants": {n: p.model_dump(mode="json", exclude_defaults=True) for n, p in patches.items()},
    }


def write_confirmation(search: Any, chosen: Sequence[TrialRow], seeds: AdaptiveSeeds, runs_dir: Path) -> Path:
    """Write the confirmed study (:func:`confirmation_doc`) to :func:`confirmation_path`; returns the file."""
    path = confirmation_path(search, runs_dir)
    doc = confirmation_doc(search, chosen, seeds, path.parent)
    header = f"# crmlab confirm {search.path.name}: search trials as ablation variants; crmlab ablate {path.name}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + yamlio.dumps(doc))
    os.replace(tmp, path)
    return path
