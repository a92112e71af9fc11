"""Dotted-path access to plain YAML documents: ``--set recipe.stages.0.epochs=3``, ablation ``set`` patches.

Paths are dot-separated mapping keys; an integer component indexes a list. Setting a path whose parent does not
exist, or a key the parent mapping lacks, is a one-line error naming the path and the closest existing key; pass
``create=True`` to add missing mapping keys (a schema check afterwards catches misspelt ones).
"""

from __future__ import annotations

import copy
from typing import Any

from crmlab.registry import yamlio
from crmlab.registry.errors import SpecError, did_you_mean

__all__ = ["get_path", "parse_assignment", "set_path"]


def _step(node: Any, part: str, path: str, where: str, file: str) -> Any:
    if isinstance(node, dict):
        if part not in node:
            raise SpecError(file, where, f"no key '{part}' at '{path or '<top>'}'{did_you_mean(part, map(str, node))}")
        return node[part]
    if isinstance(node, list):
        if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
            raise SpecError(file, where, f"'{path}' is a list of {len(node)}; '{part}' is not an index of it")
        return node[int(part)]
    raise SpecError(file, where, f"'{path}' is a {type(node).__name__}, not a mapping or list")


def get_path(doc: Any, dotted: str, file: str = "", where: str | None = None) -> Any:
    """The value at ``dotted`` in ``doc``."""
    node, done = doc, []
    for part in dotted.split("."):
        node = _step(node, part, ".".join(done), where or dotted, file)
        done.append(part)
    return node


def set_path(doc: Any, dotted: str, value: Any, file: str = "", where: str | None = None, create: bool = False) -> Any:
    """A deep copy of ``doc`` with ``dotted`` set to ``value`` (the original is not modified)."""
    out = copy.deepcopy(doc)
    *parents, last = dotted.split(".")
    parent = out
    for i, part in enumerate(parents):
        if create and isinstance(parent, dict) and part not in parent:
            parent[part] = {}
        parent = _step(parent, part, ".".join(parents[:i]), where or dotted, file)
    if isinstance(parent, dict):
        if last not in parent and not create:
            prefix = ".".join(parents) or "<top>"
            raise SpecError(
                file, where or dotted, f"no key '{last}' at '{prefix}'{did_you_mean(last, map(str, parent))}"
            )
        parent[last] = value
    else:
        _step(parent, last, ".".join(parents), where or dotted, file)
        parent[int(last)] = value
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """``'recipe.epochs=3'`` -> ``('recipe.epochs', 3)``; the value is read as YAML (``1e-4`` is a float)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SpecError("", "--set", f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yamlio.loads(raw, f"--set {key.strip()}") if raw.strip() else None
