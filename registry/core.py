"""Name -> factory registries for blocks and graph templates, filled from entry points.

Contract of the ``crmlab.blocks`` entry-point group
---------------------------------------------------
An entry point ``NAME = "module:attr"`` registers the block ``NAME``. ``attr`` is a factory, normally a Keras 3
layer class, such that:

* ``factory(**params, name=NODE)`` builds the layer; its ``__init__`` keyword arguments *are* the YAML ``params``
  and must appear, with the same names, in ``get_config()``. Type hints on ``__init__`` are checked against the
  YAML values before anything is built.
* ``factory.crmlab_inputs`` (default ``("x",)``) names the layer's inputs, in the order ``call`` receives them
  (a single tensor when there is one input, else a list). A trailing ``?`` marks an optional input.
* ``factory.crmlab_outputs`` (default ``("out",)``) names its output ports; with several ports ``call`` returns a
  tuple in that order. A graph spec refers to them as ``node.port``; a bare ``node`` means its first port.
* ``factory.crmlab_example`` is ``{"params": {...}, "inputs": [shape, ...]}``: small parameters and per-example
  input shapes (no batch axis; a 1-D shape means integer tokens, else float features) with which the plugin test
  kit (:func:`crmlab.blocks.testing.check_block`) builds, runs, re-configures and saves/loads the block.
* Sub-layers take the block's ``dtype_policy``, so the block is correct under mixed precision (the kit checks it).

Built-in blocks are declared in crmlab's own ``pyproject.toml`` exactly like a third-party plugin's, so both are
loaded the same way. Entry points are loaded lazily: listing names costs nothing, and a block's module is imported
when it is first used. A name declared twice raises :class:`DuplicateNameError` naming both origins; a module
that fails to import is recorded in :attr:`Registry.failed` (and shown by ``crmlab blocks``), never fatal to the
other blocks.

The ``crmlab.templates`` group follows the same rules with plain Python functions ``template(**params) -> dict``
returning a graph-spec document (see :mod:`crmlab.registry.templates`).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from typing import Any

from crmlab.registry.errors import CrmlabError

__all__ = [
    "BLOCK_GROUP",
    "OLD_TOP_LEVEL",
    "TEMPLATE_GROUP",
    "BlockInfo",
    "BlockLoadError",
    "DuplicateNameError",
    "LoadFailure",
    "Param",
    "Registry",
    "blocks",
    "load_error_text",
    "signature_params",
    "templates",
]

BLOCK_GROUP = "crmlab.blocks"
TEMPLATE_GROUP = "crmlab.templates"

_MISSING = inspect.Parameter.empty
_NOT_PARAMS = {"self", "name", "dtype", "trainable", "autocast"}


class DuplicateNameError(CrmlabError):
    """Two origins registered the same name."""


class BlockLoadError(CrmlabError):
    """A registered entry point failed to import."""


@dataclass(frozen=True)
class Param:
    """One constructor parameter: ``annotation`` is the resolved type hint (``Any`` when absent)."""

    name: str
    annotation: Any
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@dataclass(frozen=True)
class BlockInfo:
    """A loaded registry entry: the factory, where it came from, its ports and its parameters."""

    name: str
    factory: Callable[..., Any]
    origin: str
    inputs: tuple[str, ...] = ("x",)
    outputs: tuple[str, ...] = ("out",)
    params: dict[str, Param] = field(default_factory=dict)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.rstrip("?") for i in self.inputs)

    @property
    def min_inputs(self) -> int:
        return sum(1 for i in self.inputs if not i.endswith("?"))

    @property
    def max_inputs(self) -> int:
        return len(self.inputs)

    @property
    def summary(self) -> str:
        """First line of the factory's docstring."""
        doc = inspect.getdoc(self.factory) or ""
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def from_factory(cls, name: str, factory: Callable[..., Any], origin: str) -> BlockInfo:
        return cls(
            name=name,
            factory=factory,
            origin=origin,
            inputs=tuple(getattr(factory, "crmlab_inputs", ("x",))),
            outputs=tuple(getattr(factory, "crmlab_outputs", ("out",))),
            params=signature_params(factory),
        )


def signature_params(factory: Callable[..., Any]) -> dict[str, Param]:
    """The keyword parameters of ``factory`` (a class's ``__init__`` or a function), with resolved type hints."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:
        hints = {}
    params: dict[str, Param] = {}
    for p in inspect.signature(target).parameters.values():
        if p.name in _NOT_PARAMS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        params[p.name] = Param(p.name, hints.get(p.name, Any), p.default)
    return params


@dataclass(frozen=True)
class LoadFailure:
    """An entry point that could not be imported: its name, origin and the error text."""

    name: str
    origin: str
    error: str


@dataclass
class _Entry:
    origin: str
    loader: Callable[[], Any]
    info: BlockInfo | None = None


class Registry:
    """A name -> factory map (see the module docstring for the contract).

    Args:
        kind: what the entries are, used in messages ("block", "template").
    """

    def __init__(self, kind: str = "block") -> None:
        self.kind = kind
        self._entries: dict[str, _Entry] = {}
        self.failed: dict[str, LoadFailure] = {}

    def register(self, name: str, factory: Callable[..., Any] | None = None, *, origin: str | None = None) -> Any:
        """Register ``factory`` under ``name``; without ``factory`` returns a decorator."""

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            where = origin or f"{f.__module__}:{f.__qualname__}"
            self._add(name, where, lambda: f)
            return f

        return add if factory is None else add(factory)

    def add_entry_point(self, ep: metadata.EntryPoint) -> None:
        """Register an entry point without importing it."""
        dist = getattr(ep, "dist", None)
        owner = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
        self._add(ep.name, f"{owner} ({ep.value})", ep.load)

    def _add(self, name: str, origin: str, loader: Callable[[], Any]) -> None:
        if name in self._entries:
            first = self._entries[name].origin
            raise DuplicateNameError(
                f"{self.kind} '{name}' is registered twice: by {first} and by {origin}; uninstall or rename one"
            )
        self._entries[name] = _Entry(origin, loader)

    def names(self) -> list[str]:
        """Registered names, including ones whose import failed, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def origin(self, name: str) -> str:
        return self._entries[name].origin

    def get(self, name: str) -> BlockInfo:
        """Load (once) and return the entry ``name``.

        Raises:
            KeyError: nothing is registered under ``name``.
            BlockLoadError: its module failed to import.
        """
        entry = self._entries[name]
        if entry.info is None:
            if name in self.failed:
                raise BlockLoadError(self._failure_text(self.failed[name]))
            try:
                factory = entry.loader()
                entry.info = BlockInfo.from_factory(name, factory, entry.origin)
            except (Exception, SystemExit) as exc:  # a plugin is never fatal
                self.failed[name] = LoadFailure(name, entry.origin, load_error_text(exc))
                raise BlockLoadError(self._failure_text(self.failed[name])) from None
        return entry.info

    def _failure_text(self, f: LoadFailure) -> str:
        return f"{self.kind} '{f.name}' from {f.origin} failed to load: {f.error}"

    def load_all(self) -> list[BlockInfo]:
        """Load every entry; failures are recorded in :attr:`failed` and skipped."""
        loaded = []
        for name in self.names():
            try:
                loaded.append(self.get(name))
            except BlockLoadError:
                continue
        return loaded


#: Top-level names crmlab's sub-packages had before they moved under ``crmlab`` (``blocks.base`` ->
#: ``crmlab.blocks.base``); a plugin that still imports one gets a hint instead of a bare ModuleNotFoundError.
OLD_TOP_LEVEL = ("registry", "blocks", "runners", "search")


def load_error_text(exc: BaseException) -> str:
    """One line describing why an entry point failed to import, with the new import for crmlab's old names."""
    missing = getattr(exc, "name", None) or ""
    if isinstance(exc, ModuleNotFoundError) and missing.split(".")[0] in OLD_TOP_LEVEL:
        hint = "from crmlab.blocks import Block, block" if missing.startswith("blocks") else f"import crmlab.{missing}"
        return f"it imports '{missing}', which is now 'crmlab.{missing}' (use: {hint})"
    return f"{type(exc).__name__}: {exc}"


def _discover(group: str, kind: str) -> Registry:
    reg = Registry(kind)
    seen: set[tuple[str, str]] = set()
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        key = (ep.name, dist.name if dist is not None else ep.value)
        if key in seen:  # one distribution's metadata seen twice on sys.path (e.g. a stale egg-info): first wins
            continue
        seen.add(key)
        reg.add_entry_point(ep)
    return reg


@cache
def blocks() -> Registry:
    """The process-wide block registry, discovered from the ``crmlab.blocks`` entry points."""
    return _discover(BLOCK_GROUP, "block")


@cache
def templates() -> Registry:
    """The process-wide template registry, discovered from the ``crmlab.templates`` entry points."""
    return _discover(TEMPLATE_GROUP, "template")
