"""Graph specs: YAML documents describing a model as named nodes, each a registered block.

A graph spec (``studies/graphs/*.yaml``)::

    name: crmnet
    inputs:
      seq: {shape: [112], dtype: int32}      # compact integer tokens
    nodes:
      onehot: {block: onehot_input, inputs: [seq]}
      enc1:   {block: se_conv_encoder, inputs: [onehot], params: {filters: 128, kernel_size: 11}}
      dec1:   {block: transpose_conv_decoder, inputs: [trunk, enc3.skip], params: {filters: 128}}
    outputs: [head]

``inputs`` of a node name model inputs or other nodes' output ports (``node.port``; a bare ``node`` is its first
port). Instead of ``nodes`` a spec may name a registered template whose parameters expand into nodes::

    template: {name: crmnet_unet, params: {depth: 3, filters: 32}}

Parsing here checks the document's shape only; :mod:`crmlab.registry.validate` checks it against the block registry.
Nothing in this module imports Keras.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crmlab.registry import yamlio
from crmlab.registry.errors import Issue, SpecError, SpecErrors, did_you_mean

__all__ = [
    "DTYPES",
    "NAME_RE",
    "GraphSpec",
    "InputSpec",
    "NodeSpec",
    "TemplateRef",
    "load_graph",
    "parse_graph",
    "pydantic_issues",
    "split_ref",
    "topological_order",
]

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DTYPES = ("int32", "int64", "uint8", "float32")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InputSpec(_Strict):
    """A model input: per-example ``shape`` (no batch axis) and ``dtype``."""

    shape: list[int]
    dtype: typing.Literal["int32", "int64", "uint8", "float32"] = "int32"

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(d <= 0 for d in v):
            raise ValueError("shape must be a non-empty list of positive integers")
        return v


class NodeSpec(_Strict):
    """One node: the registered ``block``, its constructor ``params`` and its ``inputs`` (port references)."""

    block: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list)

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class TemplateRef(_Strict):
    """A registered graph template and its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class GraphSpec(_Strict):
    """A parsed graph spec. ``source`` is the file it came from (for messages), not part of the document."""

    name: str = "model"
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    nodes: dict[str, NodeSpec] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=list)
    template: TemplateRef | None = None
    source: str = Field(default="", exclude=True)

    @field_validator("outputs", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def to_dict(self) -> dict[str, Any]:
        """Plain data, suitable for YAML; parsing it again gives an equal spec."""
        return self.model_dump(exclude_defaults=False, exclude={"source"}, exclude_none=True)


def split_ref(ref: str) -> tuple[str, str | None]:
    """``'enc1.skip'`` -> ``('enc1', 'skip')``; ``'enc1'`` -> ``('enc1', None)``."""
    node, _, port = ref.partition(".")
    return node, (port or None)


def _unwrap(ann: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(ann) if a is not type(None))
    return ann


def _allowed_keys(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the pydantic model reached by following ``loc`` from ``model``."""
    ann: Any = model
    for part in loc:
        ann = _unwrap(ann)
        if typing.get_origin(ann) in (dict, list):
            ann = typing.get_args(ann)[-1]  # ``part`` is a mapping key or list index
        elif isinstance(ann, type) and issubclass(ann, BaseModel) and part in ann.model_fields:
            ann = ann.model_fields[part].annotation
        else:
            return []
    ann = _unwrap(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [k for k in ann.model_fields if k != "source"]
    return []


def pydantic_issues(exc: ValidationError, file: str, model: Any, prefix: str = "") -> list[Issue]:
    """Turn a pydantic ``ValidationError`` into one :class:`Issue` per error, with dotted key paths.

    A tagged union's member tag named ``<...>`` (e.g. ``<list>``) is not a key and is left out of the path.
    """
    issues = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("<") and p.endswith(">")))
        is_key = bool(loc) and loc[-1] == "[key]"
        if is_key:
            loc = loc[:-1]
        path = ".".join(str(p) for p in loc)
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        if is_key:
            value = err.get("input")
            msg = (
                f"names must be strings; YAML read this one as {type(value).__name__} {value!r} "
                "(quote it, e.g. 'no' or '1')"
            )
        elif err["type"] in ("model_type", "dict_type"):
            value = err.get("input")
            msg = f"must be a mapping, got {type(value).__name__} {value!r}"
        elif err["type"] == "extra_forbidden":
            key = str(loc[-1])
            msg = f"unknown key '{key}'{did_you_mean(key, _allowed_keys(model, loc[:-1]))}"
        elif err["type"] == "missing":
            msg = "is required"
        elif err["type"] == "value_error":
            msg = str(err.get("ctx", {}).get("error", err["msg"]))
        else:
            value = err.get("input")
            got = f"{type(value).__name__} {value!r}" if not isinstance(value, dict | list) else type(value).__name__
            msg = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got}"
        issues.append(Issue(file, path, msg))
    return issues


def parse_graph(data: Any, file: str = "") -> GraphSpec:
    """Check the shape of a graph-spec document and return the typed :class:`GraphSpec`.

    Raises:
        SpecErrors: one issue per problem, each with its dotted key path.
    """
    if data is None:
        raise SpecError(file, "", "the file is empty; a graph spec needs 'inputs', 'nodes' and 'outputs'")
    if not isinstance(data, dict):
        raise SpecError(file, "", f"a graph spec must be a mapping, got {type(data).__name__}")
    try:
        spec = GraphSpec.model_validate({**data, "source": file})
    except ValidationError as exc:
        raise SpecErrors(pydantic_issues(exc, file, GraphSpec)) from None
    issues = []
    if spec.template is None and not spec.nodes:
        issues.append(Issue(file, "nodes", "a graph spec needs 'nodes' (or a 'template')"))
    if spec.template is not None and spec.nodes:
        issues.append(Issue(file, "template", "give either 'nodes' or 'template', not both"))
    for name in [*spec.inputs, *spec.nodes]:
        section = "inputs" if name in spec.inputs else "nodes"
        if not NAME_RE.match(name):
            issues.append(
                Issue(file, f"{section}.{name}", "names must be letters, digits and '_' (no dots: a dot names a port)")
            )
    for name in set(spec.inputs) & set(spec.nodes):
        issues.append(Issue(file, f"nodes.{name}", f"'{name}' is both a model input and a node"))
    if issues:
        raise SpecErrors(issues)
    return spec


def load_graph(path: str | Path) -> GraphSpec:
    """Read a graph spec YAML file (shape only; call :func:`crmlab.registry.validate.resolve_graph` to validate)."""
    return parse_graph(yamlio.load(path), str(path))


def topological_order(spec: GraphSpec) -> list[str]:
    """Node names in an order where every node comes after the nodes it reads. Assumes a validated spec."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str) -> None:
        if state.get(n) == 2 or n not in spec.nodes:
            return
        state[n] = 1
        for ref in spec.nodes[n].inputs:
            visit(split_ref(ref)[0])
        state[n] = 2
        order.append(n)

    for name in spec.nodes:
        visit(name)
    return order
