"""Safe YAML loading for every crmlab file.

Compared with ``yaml.safe_load`` this loader also:

* rejects duplicate mapping keys (PyYAML silently keeps the last one, hiding typos in long specs);
* reads ``1e-4`` and ``1E5`` as floats, as YAML 1.2 does (PyYAML's YAML 1.1 resolver reads them as strings);
* reports syntax errors and tags that would construct Python objects (``!!python/object``) as a
  one-line :class:`~crmlab.registry.errors.SpecError` with the file and line;
* rejects recursive aliases and documents that aliases expand beyond :data:`MAX_VALUES` values (a "billion laughs"
  document is a few lines that expand to billions of values once validated, copied or printed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from crmlab.registry.errors import SpecError

__all__ = ["MAX_DEPTH", "MAX_VALUES", "dumps", "load", "loads"]

MAX_VALUES = 1_000_000
"""The most values (scalars, lists and mappings, counted as if every alias were written out) one document may hold."""
MAX_DEPTH = 64
"""The deepest nesting of lists and mappings a document may have (validating deeper data exhausts the stack)."""

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats and duplicate-key detection."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key '{key}' (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _expanded_size(data: Any, file: str) -> int:
    """The number of values in ``data`` with every alias written out (shared objects counted once per use)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, dict | list):
            return 1
        if depth > MAX_DEPTH:
            raise SpecError(file, "", f"invalid YAML: lists and mappings nested more than {MAX_DEPTH} deep")
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise SpecError(file, "", "invalid YAML: a recursive alias (an anchor used inside itself)")
        open_.add(key)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_VALUES:
                break
        open_.discard(key)
        sizes[key] = total
        return total

    return size(data, 1)


def loads(text: str, file: str = "<string>") -> Any:
    """Parse YAML text safely; errors become ``SpecError('file:line', '', message)``."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in problem:
            problem = f"{problem.split(' for the tag ')[-1]} tags are not allowed (crmlab YAML is plain data)"
        raise SpecError(where, "", f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(file, "", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise SpecError(file, "", "invalid YAML: nested too deeply") from None
    if _expanded_size(data, file) > MAX_VALUES:
        raise SpecError(file, "", f"invalid YAML: aliases expand it beyond {MAX_VALUES:,} values")
    return data


def load(path: str | Path) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is a ``SpecError`` too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), "", f"cannot read: {exc}") from None
    return loads(text, str(path))


def dumps(data: Any) -> str:
    """Serialise plain data to YAML (block style, keys in insertion order)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
