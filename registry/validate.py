"""Validation of graph specs against the registries, before any Keras object exists.

:func:`resolve_graph` is the single entry point used by ``build``, ``train``, ablation and search: it expands a
template (if the spec names one), then checks every node's block, parameters and inputs, cycles and outputs, and
reports all problems at once as :class:`~crmlab.registry.errors.SpecErrors` (one ``FILE: key.path: message`` line each).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from crmlab.registry import core
from crmlab.registry.core import BlockLoadError, Param, Registry
from crmlab.registry.errors import Issue, SpecError, SpecErrors, did_you_mean
from crmlab.registry.spec import GraphSpec, parse_graph, split_ref

__all__ = [
    "check_params",
    "check_value",
    "expand_template",
    "find_cycle",
    "resolve_graph",
    "type_name",
    "validate_graph",
]


@cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def type_name(annotation: Any) -> str:
    """A short readable name for a type hint: ``int``, ``list[int]``, ``int | None``, ``'add' | 'multiply_sin'``."""
    if annotation is Any:
        return "any"
    if hasattr(annotation, "__metadata__"):
        return _constrained_name(type_name(annotation.__origin__), annotation.__metadata__)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Sequence, list) and args:
        return f"list[{type_name(args[0])}]"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _constrained_name(base: str, metadata: Sequence[Any]) -> str:
    """``int`` + ``Ge(1)`` -> ``int >= 1``; ``float`` + ``Ge(0), Lt(1)`` -> ``float in [0, 1)``."""
    low = next(((getattr(m, a), b) for m in metadata for a, b in (("ge", "["), ("gt", "(")) if hasattr(m, a)), None)
    high = next(((getattr(m, a), b) for m in metadata for a, b in (("le", "]"), ("lt", ")")) if hasattr(m, a)), None)
    if low and high:
        base = f"{base} in {low[1]}{low[0]}, {high[0]}{high[1]}"
    elif low:
        base = f"{base} {'>=' if low[1] == '[' else '>'} {low[0]}"
    elif high:
        base = f"{base} {'<=' if high[1] == ']' else '<'} {high[0]}"
    for m in metadata:
        if getattr(m, "min_length", 0):
            base += " (non-empty)" if m.min_length == 1 else f" (at least {m.min_length} items)"
    return base


def check_value(param: Param, value: Any) -> str | None:
    """Return an error message if ``value`` does not fit ``param``'s type hint (strictly: no str -> number)."""
    if param.annotation is Any:
        return None
    try:
        _adapter(param.annotation).validate_python(value, strict=True)
    except ValidationError:
        shown = repr(value) if not isinstance(value, dict) else "a mapping"
        return f"expects {type_name(param.annotation)}, got {type(value).__name__} {shown}"
    except Exception:
        return None
    return None


def check_params(info_params: dict[str, Param], given: dict[str, Any], owner: str) -> list[tuple[str, str]]:
    """(key, message) for every unknown, mistyped or missing parameter of ``owner``."""
    problems = []
    for key, value in given.items():
        if key not in info_params:
            problems.append((key, f"{owner} takes no '{key}'{did_you_mean(key, info_params)}"))
            continue
        msg = check_value(info_params[key], value)
        if msg:
            problems.append((key, f"{owner} {msg}"))
    for p in info_params.values():
        if p.required and p.name not in given:
            problems.append((p.name, f"{owner} requires '{p.name}' ({type_name(p.annotation)})"))
    return problems


def expand_template(spec: GraphSpec, templates: Registry | None = None) -> GraphSpec:
    """Expand ``spec.template`` into explicit nodes (a spec without a template is returned as is)."""
    if spec.template is None:
        return spec
    reg = templates if templates is not None else core.templates()
    file, ref = spec.source, spec.template
    if ref.name not in reg:
        raise SpecError(file, "template.name", f"no template '{ref.name}'{did_you_mean(ref.name, reg.names())}")
    try:
        info = reg.get(ref.name)
    except BlockLoadError as exc:
        raise SpecError(file, "template.name", str(exc)) from None
    problems = check_params(info.params, ref.params, f"template {ref.name}")
    if problems:
        raise SpecErrors(Issue(file, f"template.params.{k}", m) for k, m in problems)
    try:
        doc = info.factory(**ref.params)
    except ValueError as exc:
        key, _, msg = str(exc).partition(": ")
        path = f"template.params.{key}" if key in info.params else "template.params"
        raise SpecError(file, path, msg if key in info.params else str(exc)) from None
    doc = {"name": spec.name, "description": spec.description, **doc}
    if spec.inputs:
        doc["inputs"] = {k: v.model_dump() for k, v in spec.inputs.items()}
    return parse_graph(doc, file)


def validate_graph(spec: GraphSpec, blocks: Registry | None = None) -> None:
    """Check an explicit (template-free) spec against the block registry; raise ``SpecErrors`` listing all issues."""
    reg = blocks if blocks is not None else core.blocks()
    file = spec.source
    issues: list[Issue] = []
    infos = {}
    for name, node in spec.nodes.items():
        where = f"nodes.{name}"
        if node.block not in reg:
            issues.append(
                Issue(file, f"{where}.block", f"no block '{node.block}'{did_you_mean(node.block, reg.names())}")
            )
            continue
        try:
            info = infos[name] = reg.get(node.block)
        except BlockLoadError as exc:
            issues.append(Issue(file, f"{where}.block", str(exc)))
            continue
        for key, msg in check_params(info.params, node.params, node.block):
            issues.append(Issue(file, f"{where}.params.{key}", msg))
        n = len(node.inputs)
        if not info.min_inputs <= n <= info.max_inputs:
            want = (
                str(info.max_inputs)
                if info.min_inputs == info.max_inputs
                else f"{info.min_inputs} to {info.max_inputs}"
            )
            issues.append(
                Issue(
                    file, f"{where}.inputs", f"{node.block} takes {want} input(s) ({', '.join(info.inputs)}), got {n}"
                )
            )
    known = [*spec.inputs, *spec.nodes]

    def check_ref(ref: str, path: str) -> None:
        target, port = split_ref(ref)
        if target in spec.inputs:
            if port is not None:
                issues.append(Issue(file, path, f"model input '{target}' has no ports"))
            return
        if target not in spec.nodes:
            issues.append(
                Issue(file, path, f"'{target}' is neither a node nor a model input{did_you_mean(target, known)}")
            )
            return
        info = infos.get(target)
        if port is not None and info is not None and port not in info.outputs:
            issues.append(
                Issue(
                    file, path, f"node '{target}' ({info.name}) has no port '{port}' (ports: {', '.join(info.outputs)})"
                )
            )

    for name, node in spec.nodes.items():
        for i, ref in enumerate(node.inputs):
            check_ref(ref, f"nodes.{name}.inputs.{i}")
    if not spec.inputs:
        issues.append(Issue(file, "inputs", "the graph has no model inputs"))
    if not spec.outputs:
        issues.append(Issue(file, "outputs", "the graph has no outputs"))
    for i, ref in enumerate(spec.outputs):
        check_ref(ref, f"outputs.{i}")
    cycle = find_cycle(spec)
    if cycle:
        issues.append(Issue(file, f"nodes.{cycle[0]}.inputs", f"cycle: {' -> '.join(cycle)}"))
    elif not issues:
        used = _reachable(spec)
        for name in spec.nodes:
            if name not in used:
                issues.append(Issue(file, f"nodes.{name}", "node is not used by any output (remove it or wire it in)"))
        for name in spec.inputs:
            if name not in used:
                issues.append(Issue(file, f"inputs.{name}", "model input is not used by any node"))
    if issues:
        raise SpecErrors(issues)


def find_cycle(spec: GraphSpec) -> list[str] | None:
    """A cycle as a node path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for ref in spec.nodes[n].inputs:
            m = split_ref(ref)[0]
            if m not in spec.nodes:
                continue
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for name in spec.nodes:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def _reachable(spec: GraphSpec) -> set[str]:
    seen: set[str] = set()
    todo = [split_ref(r)[0] for r in spec.outputs]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in spec.nodes:
            todo.extend(split_ref(r)[0] for r in spec.nodes[n].inputs)
    return seen


def resolve_graph(spec: GraphSpec, blocks: Registry | None = None, templates: Registry | None = None) -> GraphSpec:
    """Expand the template (if any) and validate: the explicit, checked spec every runner builds from."""
    explicit = expand_template(spec, templates)
    validate_graph(explicit, blocks)
    return explicit
