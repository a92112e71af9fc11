"""Every sub-package re-exports its public names lazily (:func:`crmlab.registry.lazy.lazy_exports`): each name in its
``__all__`` is importable from the package, is the object its private module defines, and is never shadowed by a
module of the same name (importing ``pkg._x`` sets the attribute ``_x``, never a public name)."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import crmlab.runners
import crmlab.search

PACKAGES = sorted(
    m.name
    for root in (crmlab.runners, crmlab.search)
    for m in pkgutil.walk_packages(root.__path__, root.__name__ + ".")
    if m.ispkg
)


def test_the_sub_packages_are_found() -> None:
    assert "crmlab.runners.data" in PACKAGES and "crmlab.search.arch.backends" in PACKAGES
    assert len(PACKAGES) == 14


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_resolve_to_what_their_module_defines(name: str) -> None:
    package = importlib.import_module(name)
    modules = [m.name for m in pkgutil.iter_modules(package.__path__) if not m.ispkg]
    assert modules and all(m.startswith("_") for m in modules), f"{name}: public modules {modules}"
    for module in modules:  # every module imported first: a public name must still be the object, not a module
        importlib.import_module(f"{name}.{module}")
    for public in package.__all__:
        value = getattr(package, public)
        assert not isinstance(value, types.ModuleType), f"{name}.{public} is a module"
    assert not hasattr(package, "no_such_name")
