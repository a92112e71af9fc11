"""Run keys: stable hashes that name a training run and each of its stages.

A run's key (:func:`run_key`) is a hash of its resolved graph spec, recipe (seed included) and the content hashes of
the data it reads; it names the run's directory ``RUNS_DIR/<run key>/``, so the same command finds the same run.
Stage keys (:func:`stage_keys`) are chained per stage, so runs that share their first stages share those stages'
weights.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from crmlab.registry import GraphSpec
from crmlab.runners.data import Dataset
from crmlab.runners.studyfile import OPERATIONAL, Recipe

__all__ = ["data_hashes", "digest", "recipe_fields", "run_key", "stage_keys"]


def digest(*parts: Any) -> str:
    """Stable short hash of JSON-able parts.

    Args:
        *parts: values ``json.dumps`` can write (others are written with ``str``).

    Returns:
        The first 16 hex digits of the SHA-256 of the parts' sorted-key JSON.
    """
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_hashes(datasets: dict[str, Dataset], tests: dict[str, Dataset]) -> dict[str, str]:
    """The content hash of every training and test set, by name (sorted), as :func:`run_key` takes them."""
    return {k: d.content_hash for k, d in sorted({**datasets, **tests}.items())}


def run_key(graph: GraphSpec, recipe: Recipe, data_hashes: dict[str, str]) -> str:
    """The key of the run that trains ``graph`` with ``recipe`` on the data with ``data_hashes``.

    Args:
        graph: the resolved graph spec.
        recipe: the recipe, its seed included.
        data_hashes: content hash by data set name (see :func:`data_hashes`).

    Returns:
        A 16-hex-digit key.
    """
    return digest(graph.to_dict(), recipe_fields(recipe), data_hashes)


_KEYED_WHEN_UNSET = {"deterministic": False}
"""Recipe fields whose value enters keys only where a recipe sets them; a recipe that leaves one out hashes the value
given here, the one every key made before held, so a change of the field's default changes no existing key."""


def recipe_fields(recipe: Recipe, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The recipe as hashed into keys: every field but ``exclude`` and the operational ones
    (:data:`~crmlab.runners.studyfile._recipe.OPERATIONAL`); ``init_seed`` only when it is set (a recipe without it
    hashes as it did before the field existed), and the fields of :data:`_KEYED_WHEN_UNSET` at their set value or,
    left out, at the value given there."""
    unset = {"init_seed"} if recipe.init_seed is None else set()
    fields = recipe.model_dump(mode="json", exclude=set(exclude) | unset | OPERATIONAL)
    for name, value in _KEYED_WHEN_UNSET.items():
        if name in fields and name not in recipe.model_fields_set:
            fields[name] = value
    return fields


def stage_keys(graph: GraphSpec, recipe: Recipe, datasets: dict[str, Dataset], replicas: int) -> list[str]:
    """One key per stage, chained: stage ``i``'s key covers the spec, seed, shared recipe fields, replicas and the
    configuration and data of stages ``0..i``. Runs whose keys agree have identical weights after that stage.

    Args:
        graph: the resolved graph spec.
        recipe: the recipe.
        datasets: the training data sets the stages name.
        replicas: the number of data-parallel replicas (the global batch depends on it).

    Returns:
        One 16-hex-digit key per stage of ``recipe``, in order.
    """
    exclude = frozenset({"stages", "early_stopping", "schedule", "epochs", "average_reverse_complement"})
    shared = recipe_fields(recipe, exclude)
    key = digest(graph.to_dict(), shared, replicas)
    keys = []
    for stage in recipe.stages:
        used = [stage.data] + ([stage.split.validation] if stage.split.validation else [])
        config = {
            "stage": stage.model_dump(mode="json"),
            "epochs": recipe.stage_epochs(stage),
            "schedule": recipe.stage_schedule(stage).model_dump(mode="json"),
            "early_stopping": recipe.stage_early_stopping(stage).model_dump(mode="json"),
            "data": [datasets[u].content_hash for u in used],
        }
        key = digest(key, config)
        keys.append(key)
    return keys
