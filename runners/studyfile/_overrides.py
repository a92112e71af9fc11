"""``--set KEY=VALUE`` overrides of a study document, and the blame of the issues at keys they wrote on the flag."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crmlab.registry import Issue, SpecErrors, parse_assignment, set_path

__all__ = ["apply_overrides", "blame_overrides"]


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


def blame_overrides(exc: SpecErrors, overrides: Sequence[str]) -> SpecErrors:
    """``exc`` with the issues at keys that ``--set`` assignments wrote reported against the flag."""
    keys = [parse_assignment(o)[0] for o in overrides]
    return SpecErrors(_blame_flag(i, keys) for i in exc.issues)
