"""Parsing and validating graph specs against a Keras-free registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crmlab.registry import Registry, SpecErrors, parse_graph, resolve_graph, topological_order, yamlio
from crmlab.registry.validate import expand_template

GRAPHS = Path(__file__).resolve().parents[2] / "studies" / "graphs"


def doc(**nodes: Any) -> dict[str, Any]:
    base = {
        "inputs": {"seq": {"shape": [16]}},
        "nodes": {
            "enc": {"block": "encoder", "inputs": "seq", "params": {"filters": 4}},
            "dec": {"block": "decoder", "inputs": ["enc.out", "enc.skip"], "params": {"filters": 4}},
            "head": {"block": "head", "inputs": ["dec"]},
        },
        "outputs": "head",
    }
    base["nodes"].update(nodes)
    return base


def errors(data: Any, reg: Registry) -> list[str]:
    with pytest.raises(SpecErrors) as err:
        resolve_graph(parse_graph(data, "s.yaml"), reg)
    return [str(i) for i in err.value.issues]


def test_valid_spec_resolves_and_orders(fake_blocks: Registry) -> None:
    spec = resolve_graph(parse_graph(doc(), "s.yaml"), fake_blocks)
    assert topological_order(spec) == ["enc", "dec", "head"]
    assert spec.nodes["enc"].inputs == ["seq"] and spec.outputs == ["head"]
    assert parse_graph(spec.to_dict(), "s.yaml") == spec


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"enc": {"block": "encodr", "inputs": "seq", "params": {"filters": 4}}},
            "s.yaml: nodes.enc.block: no block 'encodr' (did you mean 'encoder'?)",
        ),
        (
            {"enc": {"block": "encoder", "inputs": "seq", "params": {"filter": 4}}},
            "s.yaml: nodes.enc.params.filter: encoder takes no 'filter' (did you mean 'filters'?)",
        ),
        (
            {"enc": {"block": "encoder", "inputs": "seq", "params": {}}},
            "s.yaml: nodes.enc.params.filters: encoder requires 'filters' (int)",
        ),
        (
            {"enc": {"block": "encoder", "inputs": "seq", "params": {"filters": "4"}}},
            "s.yaml: nodes.enc.params.filters: encoder expects int, got str '4'",
        ),
        (
            {"enc": {"block": "encoder", "inputs": "seq", "params": {"filters": 4, "se_ratio": True}}},
            "s.yaml: nodes.enc.params.se_ratio: encoder expects int | null, got bool True",
        ),
        (
            {"dec": {"block": "decoder", "inputs": ["enc.out", "enc.skp"], "params": {"filters": 4}}},
            "s.yaml: nodes.dec.inputs.1: node 'enc' (encoder) has no port 'skp' (ports: out, skip)",
        ),
        (
            {"dec": {"block": "decoder", "inputs": ["enx.out"], "params": {"filters": 4}}},
            "s.yaml: nodes.dec.inputs.0: 'enx' is neither a node nor a model input (did you mean 'enc'?)",
        ),
        (
            {"head": {"block": "head", "inputs": ["dec", "enc"]}},
            "s.yaml: nodes.head.inputs: head takes 1 input(s) (x), got 2",
        ),
        (
            {"enc": {"block": "encoder", "inputs": "head", "params": {"filters": 4}}},
            "s.yaml: nodes.enc.inputs: cycle: enc -> head -> dec -> enc",
        ),
        (
            {"extra": {"block": "head", "inputs": ["dec"]}},
            "s.yaml: nodes.extra: node is not used by any output (remove it or wire it in)",
        ),
        (
            {"enc": {"block": "encoder", "input": "seq", "params": {"filters": 4}}},
            "s.yaml: nodes.enc.input: unknown key 'input' (did you mean 'inputs'?)",
        ),
    ],
)
def test_each_mistake_is_one_actionable_line(fake_blocks: Registry, change: dict, expected: str) -> None:
    found = errors(doc(**change), fake_blocks)
    assert expected in found, found


def test_several_mistakes_are_reported_together(fake_blocks: Registry) -> None:
    found = errors(
        doc(enc={"block": "encoder", "inputs": "seq", "params": {"filters": 4, "kernel": 3, "dropout": "x"}}),
        fake_blocks,
    )
    assert len(found) == 2 and all(line.startswith("s.yaml: nodes.enc.params.") for line in found)


def test_document_shape_errors() -> None:
    with pytest.raises(SpecErrors) as err:
        parse_graph({"nodez": {}, "inputs": {"seq": {"shape": [0]}}}, "s.yaml")
    lines = [str(i) for i in err.value.issues]
    assert "s.yaml: nodez: unknown key 'nodez' (did you mean 'nodes'?)" in lines
    assert any(line.startswith("s.yaml: inputs.seq.shape: ") for line in lines)
    with pytest.raises(SpecErrors, match=r"s.yaml: nodes.a\.b: names must be"):
        parse_graph({"nodes": {"a.b": {"block": "head"}}}, "s.yaml")


def test_template_expansion_reproduces_canonical_crmnet_node_for_node(fake_templates: Registry) -> None:
    explicit = parse_graph(yamlio.load(GRAPHS / "crmnet.yaml"), "crmnet.yaml")
    from_template = expand_template(parse_graph({"name": "crmnet", "template": {"name": "crmnet_unet"}}, "t.yaml"),
                                    fake_templates)  # fmt: skip
    assert from_template.nodes == explicit.nodes
    assert from_template.inputs == explicit.inputs and from_template.outputs == explicit.outputs


def test_template_depth_changes_levels(fake_templates: Registry) -> None:
    spec = expand_template(parse_graph({"template": {"name": "crmnet_unet", "params": {"depth": 4}}}, "t.yaml"),
                           fake_templates)  # fmt: skip
    assert [n for n in spec.nodes if n.startswith(("enc", "dec"))] == [
        "enc1", "enc2", "enc3", "enc4", "enc5", "dec1", "dec2", "dec3", "dec4",
    ]  # fmt: skip
    assert spec.nodes["dec1"].inputs == ["trunk", "enc4.skip"] and spec.nodes["dec4"].inputs == ["dec3", "enc1.skip"]
    no_skip = expand_template(
        parse_graph({"template": {"name": "crmnet_unet", "params": {"skips": False, "transformer": False}}}, "t.yaml"),
        fake_templates,
    )
    assert no_skip.nodes["dec1"].inputs == ["enc4.out"] and "trunk" not in no_skip.nodes


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"depht": 2}, "t.yaml: template.params.depht: template crmnet_unet takes no 'depht' (did you mean 'depth'?)"),
        ({"depth": 5}, "t.yaml: template.params.depth: length 112 is not divisible by 2**5 = 32; use a smaller depth"),
        ({"depth": "3"}, "t.yaml: template.params.depth: template crmnet_unet expects int >= 1, got str '3'"),
        ({"encoder_filters": [8, 8]}, "t.yaml: template.params.encoder_filters: needs depth + 1 = 4 widths, got 2"),
    ],
)
def test_template_parameter_errors(fake_templates: Registry, params: dict, expected: str) -> None:
    with pytest.raises(SpecErrors) as err:
        expand_template(parse_graph({"template": {"name": "crmnet_unet", "params": params}}, "t.yaml"), fake_templates)
    assert expected in [str(i) for i in err.value.issues]


def test_untyped_parameters_accept_anything(fake_blocks: Registry) -> None:
    spec = doc(head={"block": "free", "inputs": ["dec"], "params": {"anything": {"a": [1]}}})
    assert resolve_graph(parse_graph(spec, "s.yaml"), fake_blocks).nodes["head"].block == "free"
