"""Search spaces: typed parameters, conditions, targets, active values and the patch of a trial (Keras-free).

One test module for :mod:`crmlab.registry.space`, over 400 lines because it mirrors that module's four parameter
types, condition grammar and targets, with a table of error messages for each.
"""

from __future__ import annotations

import inspect
from textwrap import dedent
from typing import Any

import pytest
import yaml

from crmlab.registry import (
    MAX_TESTED_VALUES,
    BoolParam,
    ChoiceParam,
    FloatParam,
    IntParam,
    Patch,
    Space,
    SpecErrors,
    apply_patch,
    parent_values,
    parse_space,
    yamlio,
)
from crmlab.registry.core import blocks
from crmlab.registry.space import Condition
from crmlab.registry.templates import crmnet_unet

FILE = "study.yaml"
TEMPLATE = dict(inspect.signature(crmnet_unet).parameters)  # the real template's parameter names

NESTED = """
transformer: {type: bool}
num_heads:
  type: choice
  values: [2, 4, 8]
  when: transformer == true
key_dim:
  type: choice
  values: [32, 64]
  when: num_heads in [4, 8]
depth: {type: int, low: 2, high: 4}
recipe.batch_size: {type: choice, values: [32, 64]}
recipe.schedule.peak: {type: float, low: 1e-4, high: 1e-2, log: true}
pretraining: {type: bool}
"""


def space(text: str, template: dict[str, Any] | None = TEMPLATE) -> Space:
    return parse_space(yamlio.loads(dedent(text), FILE), FILE, template)


def errors(text: str | Any, template: dict[str, Any] | None = TEMPLATE, raw: bool = False) -> list[str]:
    """The error lines of an invalid space (``raw``: ``text`` is the already-loaded document)."""
    doc = text if raw else yamlio.loads(dedent(text), FILE)
    with pytest.raises(SpecErrors) as err:
        parse_space(doc, FILE, template)
    lines = str(err.value).splitlines()
    assert lines == [str(i) for i in err.value.issues]
    return lines


# --- types -----------------------------------------------------------------------------------------------------------


def test_each_type_parses_with_its_defaults_in_declaration_order() -> None:
    s = space(
        """
        kernel_size: {type: choice, values: [7, 11, null, auto]}
        depth: {type: int, low: 2, high: 4}
        filters: {type: int, low: 16, high: 256, log: true}
        recipe.batch_size: {type: int, low: 16, high: 64, step: 16}
        dropout: {type: float, low: 0.0, high: 0.5}
        transformer_dropout: {type: float, low: 0.0, high: 0.3, step: 0.1}
        se: {type: bool}
        """
    )
    assert [p.key for p in s] == [
        "kernel_size", "depth", "filters", "recipe.batch_size", "dropout", "transformer_dropout", "se",
    ]  # fmt: skip
    assert len(s) == 7
    choice, depth, filters, batch = s["kernel_size"].spec, s["depth"].spec, s["filters"].spec, s["recipe.batch_size"]
    assert isinstance(choice, ChoiceParam) and choice.values == [7, 11, None, "auto"]
    assert isinstance(depth, IntParam) and (depth.low, depth.high, depth.step, depth.log) == (2, 4, 1, False)
    assert isinstance(filters, IntParam) and filters.log
    assert batch.spec.values() == [16, 32, 48, 64] and batch.finite_values == [16, 32, 48, 64]
    dropout, tdrop = s["dropout"].spec, s["transformer_dropout"].spec
    assert isinstance(dropout, FloatParam) and (dropout.low, dropout.high, dropout.log, dropout.step) == (
        0.0, 0.5, False, None,
    )  # fmt: skip
    assert isinstance(tdrop, FloatParam) and tdrop.step == 0.1
    assert isinstance(s["se"].spec, BoolParam) and s["se"].finite_values == [True, False]
    assert s["dropout"].finite_values is None
    assert all(p.conditions == () and p.spec.when is None for p in s)


def test_float_bounds_in_exponent_notation_are_numbers() -> None:
    text = "recipe.schedule.peak: {type: float, low: 1e-4, high: 5E-2, log: true, step: null}\n"
    assert yaml.safe_load(text)["recipe.schedule.peak"]["low"] == "1e-4"  # why crmlab YAML is read by yamlio
    spec = space(text)["recipe.schedule.peak"].spec
    assert isinstance(spec, FloatParam) and spec.log
    assert (spec.low, spec.high) == (1e-4, 5e-2) and type(spec.low) is float and type(spec.high) is float
    # the same text read by plain YAML 1.1 gives strings, which strict validation refuses
    assert errors(yaml.safe_load(text), raw=True) == [
        "study.yaml: space.recipe.schedule.peak.low: input should be a valid number, got str '1e-4'",
        "study.yaml: space.recipe.schedule.peak.high: input should be a valid number, got str '5E-2'",
    ]


def test_int_bounds_and_step_of_a_float_become_floats() -> None:
    spec = space("dropout: {type: float, low: 0, high: 1, step: 1}")["dropout"].spec
    assert isinstance(spec, FloatParam)
    assert (spec.low, spec.high, spec.step) == (0.0, 1.0, 1.0)
    assert all(type(v) is float for v in (spec.low, spec.high, spec.step))


@pytest.mark.parametrize(
    ("decl", "expected"),
    [
        ("{type: int, low: 5, high: 2}", "study.yaml: space.depth: high (2) is below low (5)"),
        ("{type: float, low: 0.5, high: 0.1}", "study.yaml: space.depth: high (0.1) is below low (0.5)"),
        ("{type: float, low: 0, high: 1, log: true}", "study.yaml: space.depth: log needs low > 0 and no step"),
        ("{type: float, low: -1e-3, high: 1, log: true}", "study.yaml: space.depth: log needs low > 0 and no step"),
        (
            "{type: float, low: 1e-4, high: 1, log: true, step: 0.1}",
            "study.yaml: space.depth: log needs low > 0 and no step",
        ),
        ("{type: float, low: .inf, high: 1}", "study.yaml: space.depth: low and high must be finite"),
        ("{type: int, low: 0, high: 8, log: true}", "study.yaml: space.depth: log needs low >= 1 and step 1"),
        ("{type: int, low: 1, high: 8, log: true, step: 2}", "study.yaml: space.depth: log needs low >= 1 and step 1"),
        ("{type: int, low: 1, high: 8, step: 0}", "study.yaml: space.depth.step: input should be greater than or"),
        ("{type: float, low: 0, high: 1, step: 0}", "study.yaml: space.depth.step: input should be greater than 0"),
        ("{type: int, low: 1.5, high: 8}", "study.yaml: space.depth.low: input should be a valid integer"),
        ("{type: int, low: true, high: 8}", "study.yaml: space.depth.low: input should be a valid integer, got bool"),
        ("{type: float, low: '0.1', high: 1}", "study.yaml: space.depth.low: input should be a valid number, got str"),
        ("{type: int, low: 1}", "study.yaml: space.depth.high: is required"),
        ("{type: int, low: 1, high: 2, stepp: 1}", "study.yaml: space.depth.stepp: unknown key 'stepp' (did you mean"),
        ("{type: choice, values: []}", "study.yaml: space.depth.values: list should have at least 1 item"),
        ("{type: choice, values: [2, 3, 2]}", "study.yaml: space.depth: values must be distinct"),
        (
            "{type: choice, values: [2, [2, 3]]}",
            "study.yaml: space.depth.values: values are numbers, strings, booleans or null; value 1 is list",
        ),
        ("{type: choice, values: 3}", "study.yaml: space.depth.values: input should be a valid list, got int 3"),
        ("{type: bool, low: 1}", "study.yaml: space.depth.low: unknown key 'low' (choose from: type, when)"),
        ("{type: bool, when: 3}", "study.yaml: space.depth.when: input should be a valid string, got int 3"),
    ],
)
def test_invalid_declarations_are_one_line_errors_at_their_key(decl: str, expected: str) -> None:
    lines = errors(f"depth: {decl}")
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_choice_values_that_differ_only_in_type_are_distinct() -> None:
    assert space("kernel_size: {type: choice, values: [1, 1.0, true, '1']}")["kernel_size"].finite_values == [
        1, 1.0, True, "1",
    ]  # fmt: skip


@pytest.mark.parametrize("doc", [{}, None, [], "depth", [{"depth": {"type": "bool"}}]])
def test_empty_or_non_mapping_space_is_an_error(doc: Any) -> None:
    assert errors(doc, raw=True) == ["study.yaml: space: the search space is empty: declare at least one parameter"]


def test_unknown_or_missing_type_suggests_the_closest() -> None:
    assert errors(
        """
        depth: {type: chioce, values: [2, 3]}
        filters: {low: 1, high: 2}
        kernel_size: {type: integer, low: 1, high: 2}
        dropout: {type: [float], low: 0, high: 1}
        """
    ) == [
        "study.yaml: space.depth.type: unknown type 'chioce' (did you mean 'choice'?)",
        "study.yaml: space.filters.type: is required (choose from: bool, choice, float, int)",
        "study.yaml: space.kernel_size.type: unknown type 'integer' (did you mean 'int'?)",
        "study.yaml: space.dropout.type: unknown type ['float'] (did you mean 'float'?)",
    ]


@pytest.mark.parametrize(("decl", "got"), [("3", "int"), ("[2, 3]", "list"), ("choice", "str"), ("null", "NoneType")])
def test_a_declaration_must_be_a_mapping(decl: str, got: str) -> None:
    assert errors(f"depth: {decl}") == [f"study.yaml: space.depth: expected a mapping with 'type', got {got}"]


def test_parameter_names_must_be_strings() -> None:
    assert errors({1: {"type": "bool"}, "se": {"type": "bool"}}, raw=True) == [
        "study.yaml: space: parameter names are strings, got 1"
    ]


def test_the_key_path_prefix_is_configurable() -> None:
    with pytest.raises(SpecErrors) as err:
        parse_space({"depth": {"type": "int", "low": 3, "high": 1}}, FILE, TEMPLATE, prefix="search.space")
    assert str(err.value) == "study.yaml: search.space.depth: high (1) is below low (3)"


# --- targets ---------------------------------------------------------------------------------------------------------


def test_targets_shortcuts_recipe_paths_graph_paths_and_template_parameters() -> None:
    s = space(
        """
        transformer: {type: bool}
        se: {type: bool}
        skips: {type: bool}
        pretraining: {type: bool}
        recipe.schedule.peak: {type: float, low: 0.001, high: 0.01}
        nodes.enc1.params.filters: {type: choice, values: [64, 128]}
        template.params.key_dim: {type: choice, values: [64, 128]}
        num_heads: {type: int, low: 2, high: 8}
        """
    )
    assert [(p.target, p.path) for p in s] == [
        ("shortcut", "transformer"),
        ("shortcut", "se"),
        ("shortcut", "skips"),
        ("shortcut", "pretraining"),
        ("recipe", "recipe.schedule.peak"),
        ("graph", "nodes.enc1.params.filters"),
        ("graph", "template.params.key_dim"),
        ("graph", "template.params.num_heads"),
    ]


def test_dotted_paths_need_no_template() -> None:
    s = space("nodes.enc1.params.filters: {type: choice, values: [64]}\nrecipe.batch_size: {type: bool}", None)
    assert [(p.target, p.path) for p in s] == [
        ("graph", "nodes.enc1.params.filters"),
        ("recipe", "recipe.batch_size"),
    ]


@pytest.mark.parametrize("shortcut", ["transformer", "se", "skips", "pretraining"])
@pytest.mark.parametrize("decl", ["{type: choice, values: [true, false]}", "{type: int, low: 0, high: 1}"])
def test_a_shortcut_must_be_bool(shortcut: str, decl: str) -> None:
    assert errors(f"{shortcut}: {decl}") == [
        f"study.yaml: space.{shortcut}.type: '{shortcut}' switches a part on or off: use type: bool"
    ]


def test_bare_name_without_a_template_asks_for_a_dotted_path() -> None:
    (line,) = errors("depth: {type: int, low: 2, high: 4}", template=None)
    assert line.startswith("study.yaml: space.depth: 'depth' is not a shortcut (transformer, se, skips, pretraining)")
    assert "uses no template" in line and line.endswith("write a path such as nodes.NODE.params.NAME")


def test_bare_name_that_is_no_template_parameter_suggests_the_closest() -> None:
    assert errors("num_head: {type: int, low: 2, high: 4}\ntransformr: {type: bool}") == [
        "study.yaml: space.num_head: 'num_head' is no shortcut nor parameter of the base spec's template "
        "(did you mean 'num_heads'?)",
        "study.yaml: space.transformr: 'transformr' is no shortcut nor parameter of the base spec's template "
        "(did you mean 'transformer'?)",
    ]


# --- conditions ------------------------------------------------------------------------------------------------------


def test_each_condition_operator_parses() -> None:
    s = space(
        """
        transformer: {type: bool}
        depth: {type: int, low: 2, high: 5}
        position_mode: {type: choice, values: [add, multiply_sin]}
        num_heads:
          type: choice
          values: [2, 4]
          when: transformer == true
        key_dim:
          type: int
          low: 16
          high: 64
          when: depth != 5
        ff_dim:
          type: int
          low: 16
          high: 64
          when: "depth in [2, 3] and transformer==true and position_mode == add"
        kernel_size:
          type: int
          low: 3
          high: 11
          when: depth in [4]
        """
    )
    assert s["num_heads"].conditions == (Condition("transformer", (True,)),)
    assert s["key_dim"].conditions == (Condition("depth", (5,), negate=True),)
    assert s["ff_dim"].conditions == (
        Condition("depth", (2, 3)),
        Condition("transformer", (True,)),
        Condition("position_mode", ("add",)),
    )
    assert [str(c) for c in s["ff_dim"].conditions] == [
        "depth in [2, 3]", "transformer == true", "position_mode == add",
    ]  # fmt: skip
    assert [str(c) for c in s["key_dim"].conditions + s["kernel_size"].conditions] == ["depth != 5", "depth == 4"]


def test_condition_values_are_read_like_the_study_file() -> None:
    """``1e-4`` in a condition is the float the declaration's ``1e-4`` is, not the string plain YAML reads."""
    s = space(
        """
        recipe.schedule.peak: {type: choice, values: [1e-4, 1e-3]}
        recipe.batch_size:
          type: choice
          values: [32, 64]
          when: recipe.schedule.peak == 1e-4
        """
    )
    assert s["recipe.batch_size"].conditions == (Condition("recipe.schedule.peak", (1e-4,)),)
    assert s.active({"recipe.schedule.peak": 1e-4, "recipe.batch_size": 32}) == {
        "recipe.schedule.peak": 1e-4, "recipe.batch_size": 32,
    }  # fmt: skip
    assert s.active({"recipe.schedule.peak": 1e-3, "recipe.batch_size": 32}) == {"recipe.schedule.peak": 1e-3}


def child(when: str, parents: str = "transformer: {type: bool}\ndepth: {type: int, low: 2, high: 4}\n") -> list[str]:
    return errors(f"{parents}num_heads:\n  type: choice\n  values: [2, 4]\n  when: {when}\n")


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("transformer", "cannot read 'transformer': write KEY == VALUE, KEY != VALUE or KEY in [V, ...]"),
        ("transformer = true", "cannot read 'transformer = true'"),
        ("transformer not in [true]", "cannot read 'transformer not in [true]'"),
        ("and transformer == true", "cannot read 'and transformer == true'"),
        ("''", "cannot read ''"),
        ("transformr == true", "condition names 'transformr', not a parameter declared earlier (did you mean"),
        ("key_dim == 64", "condition names 'key_dim', not a parameter declared earlier (choose from: depth, transf"),
        ("num_heads == 2", "'num_heads' cannot depend on itself"),
        ("transformer == 1", "'transformer' never takes 1; its values are [true, false]"),
        ("transformer == 'true'", "'transformer' never takes 'true'; its values are [true, false]"),
        ("depth == 5", "'depth' never takes 5; its values are [2, 3, 4]"),
        ("depth == 3.0", "'depth' never takes 3.0; its values are [2, 3, 4]"),
        ("depth == true", "'depth' never takes true; its values are [2, 3, 4]"),
        ("'depth in [2, 7]'", "'depth' never takes 7; its values are [2, 3, 4]"),
        ("depth in 2", "'in' needs a non-empty list, e.g. depth in [1, 2]"),
        ("'depth in []'", "'in' needs a non-empty list, e.g. depth in [1, 2]"),
        ("'depth == [2'", "cannot read the value '[2' of condition 'depth == [2'"),
    ],
)
def test_unreadable_or_impossible_conditions(when: str, message: str) -> None:
    (line,) = child(when)
    assert line.startswith(f"study.yaml: space.num_heads.when: {message}"), line


def test_a_condition_may_only_name_an_earlier_parameter() -> None:
    assert errors(
        """
        num_heads:
          type: choice
          values: [2, 4]
          when: transformer == true
        transformer: {type: bool}
        """
    ) == [
        "study.yaml: space.num_heads.when: condition names 'transformer', not a parameter declared earlier "
        "(no parameter is declared before it)"
    ]


def test_a_condition_cannot_test_a_float_or_a_huge_int() -> None:
    assert child("dropout == 0.1", "dropout: {type: float, low: 0.0, high: 0.5}\n") == [
        "study.yaml: space.num_heads.when: condition on 'dropout': a float parameter cannot be tested; use choice"
    ]
    wide = f"filters: {{type: int, low: 1, high: {MAX_TESTED_VALUES + 1}}}\n"
    assert child("filters == 3", wide) == [
        f"study.yaml: space.num_heads.when: condition on 'filters': an int parameter with more than "
        f"{MAX_TESTED_VALUES:,} values cannot be tested; use choice"
    ]
    # a wide int on a coarse grid has few values and may be tested
    coarse = f"filters: {{type: int, low: 1, high: {10 * MAX_TESTED_VALUES}, step: 1000}}\n"
    assert space(f"{coarse}num_heads:\n  type: bool\n  when: filters == 1001\n")["num_heads"].conditions == (
        Condition("filters", (1001,)),
    )


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("depth == 2 and depth == 3", "the conditions on 'depth' contradict each other"),
        ("'depth in [2, 3] and depth != 2 and depth != 3'", "the conditions on 'depth' contradict each other"),
        ("transformer == true and transformer != true", "the conditions on 'transformer' contradict each other"),
    ],
)
def test_contradictory_conditions_can_never_hold(when: str, message: str) -> None:
    (line,) = child(when)
    assert line.startswith(f"study.yaml: space.num_heads.when: can never hold: {message}")
    assert line.endswith("no value of it satisfies them all")


def test_a_condition_that_excludes_its_parents_own_condition_can_never_hold() -> None:
    assert errors(
        """
        transformer: {type: bool}
        num_heads:
          type: choice
          values: [2, 4]
          when: transformer == true
        key_dim:
          type: choice
          values: [32, 64]
          when: num_heads == 2 and transformer == false
        """
    ) == [
        "study.yaml: space.key_dim.when: can never hold: 'num_heads' is only active when transformer == true, "
        "which this condition excludes"
    ]


def test_a_condition_that_excludes_a_grandparents_condition_can_never_hold() -> None:
    """``ff_dim`` needs ``key_dim``, which needs ``num_heads``, which needs ``transformer == true``."""
    assert errors(
        """
        transformer: {type: bool}
        num_heads:
          type: choice
          values: [2, 4]
          when: transformer == true
        key_dim:
          type: choice
          values: [32, 64]
          when: num_heads == 2
        ff_dim:
          type: choice
          values: [32, 64]
          when: key_dim == 32 and transformer == false
        """
    ) == [
        "study.yaml: space.ff_dim.when: can never hold: 'num_heads' is only active when transformer == true, "
        "which this condition excludes"
    ]


def test_two_parents_that_are_never_active_together_can_never_hold() -> None:
    assert errors(
        """
        depth: {type: int, low: 2, high: 3}
        num_heads:
          type: choice
          values: [2, 4]
          when: depth == 2
        key_dim:
          type: choice
          values: [32, 64]
          when: depth == 3
        ff_dim:
          type: choice
          values: [32, 64]
          when: num_heads == 2 and key_dim == 32
        """
    ) == ["study.yaml: space.ff_dim.when: can never hold: 'key_dim' is only active when depth == 3, which this "
          "condition excludes"]  # fmt: skip


def test_every_problem_is_reported_at_once_in_order() -> None:
    with pytest.raises(SpecErrors) as err:
        space(
            """
            depth: {type: int, low: 4, high: 2}
            transformer: {type: choice, values: [true, false]}
            kernel_size: {type: chioce, values: [3]}
            dropout: 0.1
            se: {type: bool}
            filters:
              type: choice
              values: [32, 64]
              when: se == false and se == true
            num_head: {type: bool}
            """
        )
    assert [(i.file, i.path) for i in err.value.issues] == [
        (FILE, "space.depth"),
        (FILE, "space.transformer.type"),
        (FILE, "space.kernel_size.type"),
        (FILE, "space.dropout"),
        (FILE, "space.filters.when"),
        (FILE, "space.num_head"),
    ]
    assert len(str(err.value).splitlines()) == 6


# --- active values, patches, parent values ---------------------------------------------------------------------------


def test_active_drops_inactive_values_along_a_chain_in_space_order() -> None:
    s = space(NESTED)
    on = {"key_dim": 64, "num_heads": 8, "transformer": True, "depth": 3, "unknown": 1}
    assert list(s.active(on).items()) == [("transformer", True), ("num_heads", 8), ("key_dim", 64), ("depth", 3)]
    assert s.active({**on, "num_heads": 2}) == {"transformer": True, "num_heads": 2, "depth": 3}
    # transformer off: num_heads is inactive, so key_dim (which needs num_heads) is too, whatever was sampled
    assert s.active({**on, "transformer": False}) == {"transformer": False, "depth": 3}
    # a parent missing from the values makes its children inactive
    assert s.active({"num_heads": 8, "key_dim": 64}) == {}
    assert s.active({}) == {}


def test_is_active_tests_the_values_sampled_so_far() -> None:
    s = space(NESTED)
    assert s.is_active(s["transformer"], {})
    assert s.is_active(s["num_heads"], {"transformer": True})
    assert not s.is_active(s["num_heads"], {"transformer": False}) and not s.is_active(s["num_heads"], {})
    assert s.is_active(s["key_dim"], {"num_heads": 4}) and not s.is_active(s["key_dim"], {"num_heads": 2})


def test_conditions_compare_booleans_and_numbers_by_type() -> None:
    """``False == 0`` in Python, but a ``choice`` may hold both, and ``KEY == 0`` means the number."""
    s = space(
        """
        se: {type: bool}
        recipe.warmup: {type: choice, values: [0, false, 1]}
        recipe.x:
          type: bool
          when: recipe.warmup == 0
        recipe.y:
          type: bool
          when: recipe.warmup != false
        """
    )
    assert s.active({"recipe.warmup": False, "recipe.x": True, "recipe.y": True}) == {"recipe.warmup": False}
    assert s.active({"recipe.warmup": 0, "recipe.x": True, "recipe.y": True}) == {
        "recipe.warmup": 0, "recipe.x": True, "recipe.y": True,
    }  # fmt: skip
    assert s.active({"recipe.warmup": 1, "recipe.x": True, "recipe.y": False}) == {
        "recipe.warmup": 1, "recipe.y": False,
    }  # fmt: skip
    assert Condition("k", (True,)).holds(True) and not Condition("k", (True,)).holds(1)
    assert Condition("k", (1, 2), negate=True).holds(True) and not Condition("k", (1, 2), negate=True).holds(2)


def test_patch_maps_shortcuts_template_parameters_and_paths() -> None:
    s = space(NESTED + "nodes.enc1.params.filters: {type: choice, values: [64, 128]}\n")
    patch = s.patch(
        {
            "transformer": True,
            "num_heads": 4,
            "key_dim": 32,
            "depth": 2,
            "recipe.batch_size": 64,
            "recipe.schedule.peak": 3e-4,
            "pretraining": False,
            "nodes.enc1.params.filters": 128,
        }
    )
    assert isinstance(patch, Patch)
    assert (patch.transformer, patch.se, patch.skips, patch.pretraining) == (True, True, True, False)
    assert patch.replace == {} and patch.remove == []
    assert patch.set == {
        "template.params.num_heads": 4,
        "template.params.key_dim": 32,
        "template.params.depth": 2,
        "recipe.batch_size": 64,
        "recipe.schedule.peak": 3e-4,
        "nodes.enc1.params.filters": 128,
    }


def test_patch_ignores_inactive_values() -> None:
    s = space(NESTED)
    patch = s.patch({"transformer": False, "num_heads": 4, "key_dim": 32, "recipe.batch_size": 32})
    assert patch == Patch(transformer=False, set={"recipe.batch_size": 32})
    assert s.patch({}).is_empty()
    assert s.patch({"transformer": True, "pretraining": True}).is_empty()


def test_parent_values_make_the_parameter_active() -> None:
    s = space(NESTED)
    assert parent_values(s, s["transformer"]) == {}
    assert parent_values(s, s["num_heads"]) == {"transformer": True}
    assert list(parent_values(s, s["key_dim"]).items()) == [("transformer", True), ("num_heads", 4)]
    for p in s:
        assert s.is_active(p, s.active(parent_values(s, p))), p.key


def test_parent_values_satisfy_every_condition_on_a_key() -> None:
    s = space(
        """
        depth: {type: int, low: 1, high: 4}
        num_heads:
          type: choice
          values: [2, 4]
          when: depth != 1 and depth != 2
        key_dim:
          type: choice
          values: [32, 64]
          when: "depth in [2, 3, 4]"
        ff_dim:
          type: choice
          values: [32, 64]
          when: depth == 4 and key_dim == 64
        filters:
          type: choice
          values: [32, 64]
          when: key_dim == 64 and depth == 4
        """
    )
    assert parent_values(s, s["num_heads"]) == {"depth": 3}
    assert parent_values(s, s["ff_dim"]) == {"depth": 4, "key_dim": 64}
    assert parent_values(s, s["filters"]) == {"depth": 4, "key_dim": 64}
    for p in s:
        assert s.is_active(p, s.active(parent_values(s, p))), p.key


def test_representative_values() -> None:
    s = space(
        """
        kernel_size: {type: choice, values: [7, 11]}
        skips: {type: bool}
        depth: {type: int, low: 2, high: 4}
        filters: {type: int, low: 16, high: 100, step: 16}
        num_heads: {type: int, low: 3, high: 3}
        dropout: {type: float, low: 0, high: 0.5}
        transformer_dropout: {type: float, low: 0.25, high: 0.25}
        """
    )
    got = {p.key: p.representative_values() for p in s}
    assert got == {
        "kernel_size": [7, 11],
        "skips": [True, False],
        "depth": [2, 4],
        "filters": [16, 96],  # the highest value on the grid: 100 is never sampled
        "num_heads": [3],
        "dropout": [0.0, 0.5],
        "transformer_dropout": [0.25],
    }
    assert max(s["filters"].spec.values()) == 96


def test_space_lookup_by_key() -> None:
    s = space(NESTED)
    assert s["depth"].key == "depth" and s["depth"] is s.params[3]
    with pytest.raises(KeyError):
        s["nope"]


# --- a trial's patch applied to a base spec --------------------------------------------------------------------------

GRAPH = {"name": "g", "template": {"name": "crmnet_unet", "params": {"depth": 3, "num_heads": 3}}}
RECIPE = {
    "batch_size": 128,
    "stages": [{"name": "pretrain", "data": "dream"}, {"name": "finetune", "data": "random_library"}],
}


def test_a_trial_patch_applies_to_a_template_spec_and_recipe() -> None:
    s = space(NESTED)
    values = {"transformer": False, "num_heads": 8, "depth": 2, "recipe.batch_size": 32, "pretraining": False}
    graph, recipe = apply_patch(GRAPH, RECIPE, s.patch(values), blocks(), FILE, "trial")
    assert graph == {"name": "g", "template": {"name": "crmnet_unet", "params": {
        "depth": 2, "num_heads": 3, "transformer": False,
    }}}  # fmt: skip
    assert recipe == {"batch_size": 32, "stages": [{"name": "finetune", "data": "random_library"}]}
    assert GRAPH["template"]["params"] == {"depth": 3, "num_heads": 3} and len(RECIPE["stages"]) == 2  # copies


def test_active_template_values_and_recipe_paths_apply() -> None:
    s = space(NESTED)
    values = {"transformer": True, "num_heads": 4, "key_dim": 64, "recipe.schedule.peak": 2e-3, "pretraining": True}
    graph, recipe = apply_patch(GRAPH, RECIPE, s.patch(values), blocks(), FILE, "trial")
    assert graph["template"]["params"] == {"depth": 3, "num_heads": 4, "key_dim": 64}
    assert recipe == {**RECIPE, "schedule": {"peak": 2e-3}}
