"""Search spaces (``space:`` of a ``kind: search`` study): typed parameters, conditions, and the patch of a trial.

Each key of ``space`` names what it varies:

- a variant shortcut (``transformer``, ``se``, ``skips``, ``pretraining``; type ``bool``),
- a parameter of the base spec's template by its bare name (``depth``, ``kernel_size``, ``filters``),
- a dotted path into the graph document (``nodes.enc1.params.filters``, ``template.params.num_heads``),
- a dotted path into the recipe with the prefix ``recipe.`` (``recipe.schedule.peak``, ``recipe.batch_size``).

Each value declares the type (``choice`` with ``values``; ``int`` with ``low``, ``high``, optional ``step`` and
``log``; ``float`` with ``low``, ``high``, optional ``log`` or ``step``; ``bool``) and optionally a condition::

    num_heads: {type: choice, values: [2, 4, 8], when: transformer == true}

A condition is ``KEY == VALUE``, ``KEY != VALUE`` or ``KEY in [V1, V2]`` (values in YAML syntax), several joined by
``and``; ``KEY`` is a parameter declared *earlier* in ``space`` with a finite domain (``choice``, ``bool`` or
``int``). A parameter whose condition does not hold is inactive: it is not sampled, not logged, and not applied,
so the base spec keeps its own value. A trial is the patch :meth:`Space.patch` builds from the active values;
ablation variants are patches of the same kind. This module imports no Keras.

It is a little over 400 lines because the four parameter types, the ``when`` grammar and the target resolution
check one another while parsing (a condition's values must be in its parameter's domain, a target's type must
admit the domain); split apart they would pass half-parsed state between modules.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crmlab.registry import yamlio
from crmlab.registry.errors import Issue, SpecError, SpecErrors, did_you_mean
from crmlab.registry.spec import pydantic_issues
from crmlab.registry.variants import SHORTCUTS, Patch

__all__ = [
    "MAX_TESTED_VALUES",
    "BoolParam",
    "ChoiceParam",
    "Condition",
    "FloatParam",
    "IntParam",
    "Param",
    "ParamSpec",
    "Scalar",
    "Space",
    "parent_values",
    "parse_space",
]

Scalar = bool | int | float | str | None

MAX_TESTED_VALUES = 10_000
"""The most values an ``int`` parameter may have for a condition to test it (its values are enumerated)."""


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    when: str | None = None


class ChoiceParam(_Param):
    """One of ``values`` (scalars: numbers, strings, booleans or null)."""

    type: Literal["choice"]
    values: list[Scalar] = Field(min_length=1)

    @field_validator("values", mode="before")
    @classmethod
    def _scalars(cls, values: Any) -> Any:
        # one error per wrong value, not one per member of the ``Scalar`` union (values.0.bool, values.0.int, ...)
        for i, v in enumerate(values if isinstance(values, list) else []):
            if v is not None and not isinstance(v, bool | int | float | str):
                raise ValueError(f"values are numbers, strings, booleans or null; value {i} is {type(v).__name__}")
        return values

    @model_validator(mode="after")
    def _distinct(self) -> ChoiceParam:
        seen = [repr(v) for v in self.values]
        if len(set(seen)) != len(seen):
            raise ValueError("values must be distinct")
        return self


class IntParam(_Param):
    """An integer in ``[low, high]`` (both included) on a grid of ``step``, or log-uniform with ``log: true``."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log needs low >= 1 and step 1")
        return self

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


class FloatParam(_Param):
    """A float in ``[low, high]``, uniform, log-uniform (``log: true``) or on a grid of ``step``."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _ints_are_floats(cls, data: Any) -> Any:
        if isinstance(data, dict):
            # an int beyond float range stays an int, for the field's "valid number" error (float() would overflow)
            fits = {k for k, v in data.items() if type(v) is int and abs(v) <= sys.float_info.max}
            return {k: float(v) if k in ("low", "high", "step") and k in fits else v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite")
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log needs low > 0 and no step")
        return self


class BoolParam(_Param):
    """``true`` or ``false``."""

    type: Literal["bool"]

    def values(self) -> list[bool]:
        return [True, False]


ParamSpec = ChoiceParam | IntParam | FloatParam | BoolParam
_TYPES: dict[str, type[ParamSpec]] = {"choice": ChoiceParam, "int": IntParam, "float": FloatParam, "bool": BoolParam}


@dataclass(frozen=True)
class Condition:
    """``key`` must take one of ``allowed`` (an ``==``/``in`` condition) or none of them (``!=``)."""

    key: str
    allowed: tuple[Scalar, ...]
    negate: bool = False

    def holds(self, value: Any) -> bool:
        # ``False == 0`` in Python; a condition tests values as typed, like the check of its values at parse time
        found = any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in self.allowed)
        return found != self.negate

    def __str__(self) -> str:
        if self.negate:
            return f"{self.key} != {_fmt(self.allowed[0])}"
        if len(self.allowed) == 1:
            return f"{self.key} == {_fmt(self.allowed[0])}"
        return f"{self.key} in [{', '.join(_fmt(v) for v in self.allowed)}]"


def _fmt(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|\bin\b)\s*(.+?)\s*$")


@dataclass(frozen=True)
class Param:
    """One resolved search dimension: its space key, declaration, target and conditions."""

    key: str
    spec: ParamSpec
    target: Literal["shortcut", "graph", "recipe"]
    path: str
    conditions: tuple[Condition, ...] = ()

    @property
    def finite_values(self) -> list[Any] | None:
        """Every value the parameter can take, or ``None`` for a continuous float (one without ``step``)."""
        if isinstance(self.spec, ChoiceParam):
            return list(self.spec.values)
        if isinstance(self.spec, IntParam | BoolParam):
            return self.spec.values()
        if isinstance(self.spec, FloatParam) and self.spec.step is not None:
            count = math.floor((self.spec.high - self.spec.low) / self.spec.step + 1e-9) + 1
            return [self.spec.low + i * self.spec.step for i in range(count)]
        return None

    def representative_values(self) -> list[Any]:
        """Values used to validate the parameter against the base spec: all choices, or the bounds."""
        if isinstance(self.spec, IntParam):  # the highest value on the grid of ``step``, not ``high`` itself
            top = self.spec.low + (self.spec.high - self.spec.low) // self.spec.step * self.spec.step
            return [self.spec.low, top] if top != self.spec.low else [self.spec.low]
        if isinstance(self.spec, FloatParam):
            return [self.spec.low, self.spec.high] if self.spec.low != self.spec.high else [self.spec.low]
        return self.finite_values or []


@dataclass(frozen=True)
class Space:
    """An ordered, validated search space."""

    params: tuple[Param, ...]

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, key: str) -> Param:
        for p in self.params:
            if p.key == key:
                return p
        raise KeyError(key)

    def is_active(self, param: Param, values: Mapping[str, Any]) -> bool:
        """Whether ``param``'s conditions hold for the (active) ``values`` sampled so far."""
        return all(c.key in values and c.holds(values[c.key]) for c in param.conditions)

    def active(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The subset of ``values`` that is active, in space order (inactive keys are dropped)."""
        out: dict[str, Any] = {}
        for p in self.params:
            if p.key in values and self.is_active(p, out):
                out[p.key] = values[p.key]
        return out

    def patch(self, values: Mapping[str, Any]) -> Patch:
        """The variant patch of a trial with these ``values`` (inactive ones ignored)."""
        shortcuts: dict[str, bool] = {}
        sets: dict[str, Any] = {}
        for key, value in self.active(values).items():
            p = self[key]
            if p.target == "shortcut":
                shortcuts[p.path] = bool(value)
            else:
                sets[p.path] = value
        return Patch(**shortcuts, set=sets)


def _parse_when(text: str, key: str, earlier: dict[str, Param], file: str, where: str) -> tuple[Condition, ...]:
    conditions = []
    for part in re.split(r"\s+and\s+", text.strip()):
        m = _CONDITION.match(part)
        if not m:
            raise SpecError(file, where, f"cannot read '{part}': write KEY == VALUE, KEY != VALUE or KEY in [V, ...]")
        parent, op, raw = m.groups()
        if parent == key:
            raise SpecError(file, where, f"'{key}' cannot depend on itself")
        if parent not in earlier:
            hint = did_you_mean(parent, earlier) if earlier else " (no parameter is declared before it)"
            raise SpecError(file, where, f"condition names '{parent}', not a parameter declared earlier{hint}")
        spec = earlier[parent].spec
        if isinstance(spec, FloatParam):
            raise SpecError(file, where, f"condition on '{parent}': a float parameter cannot be tested; use choice")
        if isinstance(spec, IntParam) and (spec.high - spec.low) // spec.step + 1 > MAX_TESTED_VALUES:
            raise SpecError(
                file,
                where,
                f"condition on '{parent}': an int parameter with more than {MAX_TESTED_VALUES:,} values cannot be "
                "tested; use choice",
            )
        domain = earlier[parent].finite_values or []
        try:  # read like the rest of the file (1e-4 is a float), so it compares equal to the declared values
            value = yamlio.loads(raw)
        except SpecErrors:
            raise SpecError(file, where, f"cannot read the value '{raw}' of condition '{part}'") from None
        if op == "in":
            if not isinstance(value, list) or not value:
                raise SpecError(file, where, f"'in' needs a non-empty list, e.g. {parent} in [1, 2]")
            allowed = tuple(value)
        else:
            allowed = (value,)
        unknown = [v for v in allowed if not any(v == d and type(v) is type(d) for d in domain)]
        if unknown:
            raise SpecError(
                file, where, f"'{parent}' never takes {_fmt(unknown[0])}; its values are {_fmt(list(domain))}"
            )
        conditions.append(Condition(parent, allowed, negate=op == "!="))
    return tuple(conditions)


def _ancestors(conditions: tuple[Condition, ...], params: Mapping[str, Param]) -> list[tuple[str, Condition]]:
    """``(ancestor, condition)`` for every condition of every ancestor (parent, grandparent, ...), nearest first."""
    out: list[tuple[str, Condition]] = []
    queue = [c.key for c in conditions]
    seen: set[str] = set()
    while queue:
        key = queue.pop(0)
        if key in seen:
            continue
        seen.add(key)
        out.extend((key, grand) for grand in params[key].conditions)
        queue.extend(grand.key for grand in params[key].conditions)
    return out


def _allowed_values(param: Param, params: Mapping[str, Param]) -> tuple[dict[str, list[Any]], str | None]:
    """The values of each ancestor that make ``param`` active, and why there are none (or ``None``).

    ``param`` is active when its own conditions and those of every ancestor hold (an inactive parent takes no
    value); ancestors are sampled independently, so it can be active iff no ancestor's allowed values are empty.
    """
    by_key: dict[str, list[Any]] = {}
    for c in param.conditions:
        domain = by_key.get(c.key, params[c.key].finite_values or [])
        by_key[c.key] = [v for v in domain if c.holds(v)]
        if not by_key[c.key]:
            return by_key, f"the conditions on '{c.key}' contradict each other: no value of it satisfies them all"
    for key, grand in _ancestors(param.conditions, params):
        domain = by_key.get(grand.key, params[grand.key].finite_values or [])
        by_key[grand.key] = [v for v in domain if grand.holds(v)]
        if not by_key[grand.key]:
            return by_key, f"'{key}' is only active when {grand}, which this condition excludes"
    return by_key, None


def _satisfiable(param: Param, earlier: dict[str, Param]) -> str | None:
    """Why ``param``'s conditions can never hold together, or ``None``."""
    return _allowed_values(param, earlier)[1]


def _target(key: str, template_params: Mapping[str, Any] | None, file: str, where: str) -> tuple[str, str]:
    if key in SHORTCUTS:
        return "shortcut", key
    if key.startswith("recipe."):
        return "recipe", key
    if "." in key:
        return "graph", key
    if template_params is None:
        raise SpecError(
            file,
            where,
            f"'{key}' is not a shortcut ({', '.join(SHORTCUTS)}) nor a dotted path, and the base spec uses no "
            "template whose parameter it could be; write a path such as nodes.NODE.params.NAME",
        )
    if key not in template_params:
        raise SpecError(
            file,
            where,
            f"'{key}' is no shortcut nor parameter of the base spec's template{did_you_mean(key, template_params)}",
        )
    return "graph", f"template.params.{key}"


def parse_space(doc: Any, file: str, template_params: Mapping[str, Any] | None = None, prefix: str = "space") -> Space:
    """Validate a ``space`` mapping.

    Args:
        doc: the ``space`` document: key -> parameter declaration.
        file: the study file (for error messages).
        template_params: the base spec's template parameters (name -> anything), or ``None`` without a template.
        prefix: the key path of ``doc`` in the study.

    Returns:
        The :class:`Space`, parameters in declaration order.

    Raises:
        SpecErrors: every problem found, one ``FILE: space.KEY...: message`` line each.
    """
    if not isinstance(doc, dict) or not doc:
        raise SpecError(file, prefix, "the search space is empty: declare at least one parameter")
    issues: list[Issue] = []
    params: dict[str, Param] = {}
    broken: set[str] = set()
    for key, raw in doc.items():
        where = f"{prefix}.{key}"
        try:
            if not isinstance(key, str):
                raise SpecError(file, prefix, f"parameter names are strings, got {key!r}")
            if not isinstance(raw, dict):
                raise SpecError(file, where, f"expected a mapping with 'type', got {type(raw).__name__}")
            kind = raw.get("type")
            if not isinstance(kind, str) or kind not in _TYPES:
                what = "is required" if kind is None else f"unknown type {kind!r}"
                raise SpecError(file, f"{where}.type", f"{what}{did_you_mean(str(kind), _TYPES)}")
            try:
                spec = _TYPES[kind].model_validate(raw)
            except ValidationError as exc:
                raise SpecErrors(pydantic_issues(exc, file, _TYPES[kind], prefix=where)) from None
            target, path = _target(key, template_params, file, where)
            if target == "shortcut" and not isinstance(spec, BoolParam):
                raise SpecError(file, f"{where}.type", f"'{key}' switches a part on or off: use type: bool")
            if spec.when is not None and broken & _named(spec.when):
                broken.add(key)  # its parent is already reported; "not declared earlier" would be untrue
                continue
            conditions = _parse_when(spec.when, key, params, file, f"{where}.when") if spec.when is not None else ()
            param = Param(key, spec, target, path, conditions)
            reason = _satisfiable(param, params)
            if reason:
                raise SpecError(file, f"{where}.when", f"can never hold: {reason}")
            params[key] = param
        except SpecErrors as exc:
            issues.extend(exc.issues)
            if isinstance(key, str):
                broken.add(key)
    if issues:
        raise SpecErrors(issues)
    return Space(tuple(params.values()))


def _named(text: str) -> set[str]:
    """The parameter names a ``when`` text tests (those it can be read for)."""
    found = (_CONDITION.match(part) for part in re.split(r"\s+and\s+", text.strip()))
    return {m.group(1) for m in found if m}


def parent_values(space: Space, param: Param) -> dict[str, Any]:
    """Values of ``param``'s ancestors that make it active (used to validate it in isolation), in space order.

    Each ancestor takes its first value that satisfies every condition on it, ``param``'s own and its ancestors'.
    """
    by_key, _ = _allowed_values(param, {p.key: p for p in space})
    return {p.key: by_key[p.key][0] for p in space if p.key in by_key}
