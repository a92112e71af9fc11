"""Safe YAML loading for every crmlab file.

Compared with ``yaml.safe_load`` this loader also:

* rejects duplicate mapping keys (PyYAML silently keeps the last one, hiding typos in long specs);
* reads ``1e-4`` and ``1E5`` as floats, as YAML 1.2 does (PyYAML's YAML 1.1 resolver reads them as strings);
* reports syntax errors and tags that would construct Python objects (``!!python/object``) as a
  one-line :class:`~registry.errors.SpecError` with the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from registry.errors import SpecError

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


def loads(text: str, file: str = "<string>") -> Any:
    """Parse YAML text safely; errors become ``SpecError('file:line', '', message)``."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in problem:
            problem = f"{problem.split(' for the tag ')[-1]} tags are not allowed (crmlab YAML is plain data)"
        raise SpecError(where, "", f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(file, "", f"invalid YAML: {exc}") from None


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
