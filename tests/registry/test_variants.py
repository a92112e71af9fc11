"""Variant patches: set / remove / replace / shortcuts on the canonical spec, and their errors."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from crmlab.registry import (
    Registry,
    SpecErrors,
    apply_patch,
    check_leave_one_out,
    parse_graph,
    parse_patch,
    resolve_graph,
    yamlio,
)
from crmlab.registry.validate import expand_template

GRAPHS = Path(__file__).resolve().parents[2] / "studies" / "graphs"
RECIPE = {"stages": [{"name": "pretrain", "data": "dream"}, {"name": "finetune", "data": "random_library"}]}


def _stand_in(params: str, inputs: tuple[str, ...] = ("x",), outputs: tuple[str, ...] = ("out",)) -> type:
    """A Keras-free stand-in with the real block's ports and parameter names."""

    def __init__(self: Any, **kw: Any) -> None:
        self.kw = kw

    kinds = inspect.Parameter
    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [kinds("self", kinds.POSITIONAL_OR_KEYWORD)]
        + [kinds(p, kinds.KEYWORD_ONLY, default=None) for p in params.split()]
    )
    return type("StandIn", (), {"__init__": __init__, "crmlab_inputs": inputs, "crmlab_outputs": outputs})


@pytest.fixture
def crm_blocks() -> Registry:
    reg = Registry()
    conv = "filters kernel_size se_ratio"
    reg.register("onehot_input", _stand_in(""))
    reg.register("se_conv_encoder", _stand_in(f"{conv} dropout downsample", outputs=("out", "skip")))
    reg.register("position_encoding", _stand_in("mode"))
    reg.register("transformer_encoder", _stand_in("num_heads key_dim ff_dim dropout branches"))
    reg.register("transpose_conv_decoder", _stand_in(conv, inputs=("x", "skip?")))
    reg.register("se_conv_stack", _stand_in(f"{conv} batch_norm"))
    reg.register("mlp_head", _stand_in("units dropout negative_slope"))
    return reg


@pytest.fixture
def crmnet() -> dict[str, Any]:
    return yamlio.load(GRAPHS / "crmnet.yaml")


def patched(doc: dict[str, Any], patch: dict[str, Any], reg: Registry) -> tuple[Any, dict[str, Any]]:
    graph, recipe = apply_patch(doc, RECIPE, parse_patch(patch, "s.yaml", "variants.v"), reg, "s.yaml", "variants.v")
    return resolve_graph(parse_graph(graph, "s.yaml"), reg), recipe


def test_transformer_off_bypasses_trunk_and_position_encoding(crmnet: dict, crm_blocks: Registry) -> None:
    spec, _ = patched(crmnet, {"transformer": False}, crm_blocks)
    assert "trunk" not in spec.nodes and "pos" not in spec.nodes
    assert spec.nodes["dec1"].inputs == ["enc4.out", "enc3.skip"]


def test_se_off_sets_null_on_every_block_that_takes_se_ratio(crmnet: dict, crm_blocks: Registry) -> None:
    spec, _ = patched(crmnet, {"se": False}, crm_blocks)
    with_se = [n for n, node in spec.nodes.items() if "se_ratio" in node.params]
    assert with_se == ["enc1", "enc2", "enc3", "enc4", "dec1", "dec2", "dec3", "convs"]
    assert all(spec.nodes[n].params["se_ratio"] is None for n in with_se)


def test_skips_off_and_pretraining_off(crmnet: dict, crm_blocks: Registry) -> None:
    spec, recipe = patched(crmnet, {"skips": False, "pretraining": False}, crm_blocks)
    assert [spec.nodes[d].inputs for d in ("dec1", "dec2", "dec3")] == [["trunk"], ["dec1"], ["dec2"]]
    assert [s["name"] for s in recipe["stages"]] == ["finetune"]


def test_explicit_remove_with_rewiring_and_replace_and_recipe_set(crmnet: dict, crm_blocks: Registry) -> None:
    patch = {
        "remove": ["pos", "trunk"],
        "set": {"nodes.dec1.inputs": ["enc4.out", "enc3.skip"], "recipe.batch_size": 32},
        "replace": {"convs": {"block": "se_conv_stack", "params": {"se_ratio": 4}}},
    }
    spec, recipe = patched(crmnet, patch, crm_blocks)
    assert spec.nodes["dec1"].inputs == ["enc4.out", "enc3.skip"] and recipe["batch_size"] == 32
    assert spec.nodes["convs"].params == {"se_ratio": 4} and spec.nodes["convs"].inputs == ["dec3"]


def test_shortcuts_on_a_template_spec_set_template_parameters(crm_blocks: Registry) -> None:
    from crmlab.registry.templates import crmnet_unet

    templates = Registry("template")
    templates.register("crmnet_unet", crmnet_unet)
    doc = yamlio.load(GRAPHS / "crmnet_small.yaml")
    graph, _ = apply_patch(
        doc, RECIPE, parse_patch({"transformer": False, "se": False}, "s", "v"), crm_blocks, "s", "v"
    )
    assert graph["template"]["params"]["transformer"] is False and graph["template"]["params"]["se_ratio"] is None
    spec = expand_template(parse_graph(graph, "s.yaml"), templates)
    assert "trunk" not in spec.nodes and spec.nodes["enc1"].params["se_ratio"] is None


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"remove": ["trnk"]}, "s.yaml: variants.v.remove: node 'trnk' does not exist (did you mean 'trunk'?)"),
        ({"replace": {"enc9": {"block": "x"}}}, "s.yaml: variants.v.replace.enc9: node 'enc9' does not exist"),
        ({"remove": ["trunk"]}, "s.yaml: nodes.dec1.inputs.0: 'trunk' is neither a node nor a model input"),
        ({"set": {"nodes.enc1.paramz.filters": 3}}, "s.yaml: nodes.enc1.paramz: unknown key 'paramz'"),
        (
            {"transformr": False},
            "s.yaml: variants.v.transformr: unknown key 'transformr' (did you mean 'transformer'?)",
        ),
        ({"remove": "trunk"}, "s.yaml: variants.v.remove: input should be a valid list, got str 'trunk'"),
    ],
)
def test_broken_variants_are_one_line_errors(crmnet: dict, crm_blocks: Registry, patch: dict, expected: str) -> None:
    with pytest.raises(SpecErrors) as err:
        patched(crmnet, patch, crm_blocks)
    assert any(str(i).startswith(expected) for i in err.value.issues), [str(i) for i in err.value.issues]


def test_pretraining_off_drops_the_fine_tuning_stages_keep_previous(crmnet: dict, crm_blocks: Registry) -> None:
    recipe = {"stages": [RECIPE["stages"][0], {**RECIPE["stages"][1], "keep_previous": 0.5}]}
    _spec, patched_recipe = apply_patch(
        crmnet, recipe, parse_patch({"pretraining": False}, "s", "v"), crm_blocks, "s", "v"
    )
    assert patched_recipe["stages"] == [{"name": "finetune", "data": "random_library"}]
    assert recipe["stages"][1]["keep_previous"] == 0.5, "the base recipe is not modified"


def test_pretraining_off_needs_two_stages(crmnet: dict, crm_blocks: Registry) -> None:
    with pytest.raises(SpecErrors, match="single stage"):
        apply_patch(
            crmnet, {"stages": [{"name": "a"}]}, parse_patch({"pretraining": False}, "s", "v"), crm_blocks, "s", "v"
        )


def test_leave_one_out_names_are_shortcuts() -> None:
    check_leave_one_out(["transformer", "se", "pretraining", "skips"], "s.yaml", "leave_one_out")
    with pytest.raises(SpecErrors, match=r"leave_one_out\.1: no shortcut 'SE' \(did you mean 'se'\?\)"):
        check_leave_one_out(["transformer", "SE"], "s.yaml", "leave_one_out")
