"""Variants: a patch on a base graph spec and recipe (an ablation variant; a search trial is one too).

A patch (all parts optional), applied in this order::

    transformer: off      # shortcuts: the paper's ablations, expanded for the base spec
    se: off
    skips: off
    pretraining: off
    replace: {enc1: {block: my_block, params: {filters: 64}}}   # a node's block (inputs kept unless given)
    remove: [pos, trunk]                                       # delete nodes; re-wire them with `set`
    set: {nodes.dec1.inputs: [enc4.out, enc3.skip], recipe.batch_size: 32}

``set`` keys are dotted paths into the graph document (``nodes.…``, ``template.params.…``) or, with the prefix
``recipe.``, into the recipe. Shortcuts on a template-based spec set the template's parameters (``transformer``,
``se_ratio``, ``skips``); on an explicit spec ``transformer: off`` removes the transformer and position-encoding
nodes and connects their readers to what fed them, ``se: off`` sets ``se_ratio: null`` on every node whose block
takes one, ``skips: off`` keeps only the required inputs of blocks whose optional input is a skip, and
``pretraining: off`` keeps only the recipe's last stage (without its ``keep_previous``). The result is validated
like any spec.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crmlab.registry.core import BlockLoadError, Registry
from crmlab.registry.errors import Issue, SpecError, SpecErrors, did_you_mean
from crmlab.registry.patch import set_path
from crmlab.registry.spec import pydantic_issues, split_ref

__all__ = ["BYPASSED_BLOCKS", "SHORTCUTS", "Patch", "apply_patch", "check_leave_one_out", "parse_patch"]

SHORTCUTS = ("transformer", "se", "skips", "pretraining")
BYPASSED_BLOCKS = ("transformer_encoder", "position_encoding")


class Patch(BaseModel):
    """A variant: shortcuts, then ``replace``, ``remove`` and ``set``. ``False`` (YAML ``off``) turns a part off."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    transformer: bool = True
    se: bool = True
    skips: bool = True
    pretraining: bool = True
    replace: dict[str, dict[str, Any]] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)
    set: dict[str, Any] = Field(default_factory=dict)

    def is_empty(self) -> bool:
        return self == Patch()


def parse_patch(doc: Any, file: str, where: str) -> Patch:
    """Validate one variant's patch document (``where`` is its key path, e.g. ``variants.no_se``)."""
    if doc is None:
        return Patch()
    if not isinstance(doc, dict):
        raise SpecError(file, where, f"a variant must be a mapping, got {type(doc).__name__}")
    try:
        return Patch.model_validate(doc)
    except ValidationError as exc:
        raise SpecErrors(pydantic_issues(exc, file, Patch, prefix=where)) from None


def apply_patch(
    graph: dict[str, Any], recipe: dict[str, Any], patch: Patch, blocks: Registry, file: str, where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return patched copies of the ``graph`` and ``recipe`` documents (plain YAML data)."""
    graph, recipe = copy.deepcopy(graph), copy.deepcopy(recipe)
    template = graph.get("template")
    if isinstance(template, dict):
        params = template.setdefault("params", {})
        if not patch.transformer:
            params["transformer"] = False
        if not patch.se:
            params["se_ratio"] = None
        if not patch.skips:
            params["skips"] = False
    else:
        nodes = graph.get("nodes") or {}
        if not patch.transformer:
            _bypass(graph, [n for n, node in nodes.items() if node.get("block") in BYPASSED_BLOCKS], file, where)
        if not patch.se:
            for node in nodes.values():
                if "se_ratio" in _params_of(node.get("block"), blocks):
                    node.setdefault("params", {})["se_ratio"] = None
        if not patch.skips:
            for node in nodes.values():
                info = _info(node.get("block"), blocks)
                if info is not None and any(i.startswith("skip") for i in info.inputs if i.endswith("?")):
                    node["inputs"] = list(node.get("inputs", []))[: info.min_inputs]
    if not patch.pretraining:
        stages = recipe.get("stages") or []
        if not isinstance(stages, list):
            raise SpecError(file, "recipe.stages", f"must be a list of stages, got {type(stages).__name__}")
        if len(stages) < 2:
            raise SpecError(file, f"{where}.pretraining", "the recipe has a single stage: there is no pretraining")
        last = stages[-1]
        if isinstance(last, dict):  # with no previous stage, there are no previous weights to keep
            last = {k: v for k, v in last.items() if k != "keep_previous"}
        recipe["stages"] = [last]
    nodes = graph.get("nodes") or {}
    for name, new in patch.replace.items():
        if name not in nodes:
            raise SpecError(file, f"{where}.replace.{name}", f"node '{name}' does not exist{did_you_mean(name, nodes)}")
        nodes[name] = {"inputs": nodes[name].get("inputs", []), **new}
    for name in patch.remove:
        if name not in nodes:
            raise SpecError(file, f"{where}.remove", f"node '{name}' does not exist{did_you_mean(name, nodes)}")
        del nodes[name]
    for key, value in patch.set.items():
        if key.startswith("recipe."):
            recipe = set_path(recipe, key.removeprefix("recipe."), value, file, f"{where}.set.{key}", create=True)
        else:
            graph = set_path(graph, key, value, file, f"{where}.set.{key}", create=True)
    return graph, recipe


def _info(block: Any, blocks: Registry) -> Any:
    if not isinstance(block, str) or block not in blocks:
        return None
    try:
        return blocks.get(block)
    except BlockLoadError:
        return None


def _params_of(block: Any, blocks: Registry) -> dict[str, Any]:
    info = _info(block, blocks)
    return info.params if info is not None else {}


def _bypass(graph: dict[str, Any], names: list[str], file: str, where: str) -> None:
    """Remove ``names`` and point every reference to them at their first input (followed transitively)."""
    nodes = graph.get("nodes") or {}
    if not names:
        raise SpecError(file, f"{where}.transformer", f"the spec has no {' or '.join(BYPASSED_BLOCKS)} node")
    source = {}
    for n in names:
        ins = nodes[n].get("inputs") or []
        if not ins:
            raise SpecError(file, f"{where}.transformer", f"node '{n}' has no input to connect its readers to")
        source[n] = ins[0] if isinstance(ins, list) else ins

    def resolve(ref: str) -> str:
        seen = set()
        while split_ref(ref)[0] in source and ref not in seen:
            seen.add(ref)
            ref = source[split_ref(ref)[0]]
        return ref

    for n in names:
        del nodes[n]
    for node in nodes.values():
        ins = node.get("inputs") or []
        node["inputs"] = [resolve(r) for r in ([ins] if isinstance(ins, str) else ins)]
    graph["outputs"] = [resolve(r) for r in graph.get("outputs", [])]


def check_leave_one_out(names: list[str], file: str, where: str) -> None:
    """Every entry of ``leave_one_out`` must be a shortcut."""
    issues = [
        Issue(file, f"{where}.{i}", f"no shortcut '{n}'{did_you_mean(str(n), SHORTCUTS)}")
        for i, n in enumerate(names)
        if n not in SHORTCUTS
    ]
    if issues:
        raise SpecErrors(issues)
