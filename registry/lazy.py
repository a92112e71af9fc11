"""Lazy re-exports for package ``__init__`` files (PEP 562): a package names its public names and the private or
deep module each comes from, and a name is imported from its module on first use.

Callers import a sub-package, never its modules (``from crmlab.runners.data import load``), and importing a package
loads nothing: Keras and TensorFlow are imported only when a name that needs them is first used, after the command
line has chosen the backend.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__``: ``exports`` maps each public name to the module, relative to
    ``package`` (``"_sources"``), that defines it.

    Example::

        __all__ = ["DataSource", "load"]
        __getattr__, __dir__ = lazy_exports(__name__, {"DataSource": "_sources", "load": "_datasets"})
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        vars(sys.modules[package])[name] = value  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
