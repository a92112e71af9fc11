"""User-facing errors: one line each, ``FILE: key.path: message``.

Every mistake a user can make in a YAML file or on the command line is raised as a :class:`SpecError` (or a
:class:`SpecErrors` group when validation finds several at once). The CLI prints ``str(error)`` and exits with
code 2; nothing else about a user mistake ever reaches the terminal as a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CrmlabError", "Issue", "SpecError", "SpecErrors", "did_you_mean"]


class CrmlabError(Exception):
    """Base class of every error crmlab reports to a user as input error (exit code 2)."""


@dataclass(frozen=True)
class Issue:
    """One problem at one place: ``file`` (may be empty), dotted ``path`` (may be empty) and the ``message``."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.path) if p]
        return ": ".join([*parts, self.message])


class SpecErrors(CrmlabError):
    """Input errors found in one pass; ``str()`` gives one ``FILE: key.path: message`` line per error."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class SpecError(SpecErrors):
    """A single input error, printed as ``FILE: key.path: message``."""

    def __init__(self, file: str | None, path: str, message: str) -> None:
        super().__init__([Issue(str(file or ""), path, message)])


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest of ``choices``, or a list of them if none is close."""
    options = sorted(set(choices))
    same_case = [o for o in options if o.lower() == word.lower()]
    close = same_case or difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if not options:
        return ""
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f" (choose from: {shown})"
