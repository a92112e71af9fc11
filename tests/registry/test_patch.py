"""Dotted-path get/set on plain documents."""

from __future__ import annotations

import pytest

from crmlab.registry import SpecError, parse_assignment, set_path
from crmlab.registry.patch import get_path

DOC = {"recipe": {"epochs": 5, "stages": [{"name": "pre", "epochs": 2}]}, "graph": "g.yaml"}


def test_set_returns_a_modified_copy() -> None:
    out = set_path(DOC, "recipe.stages.0.epochs", 7)
    assert out["recipe"]["stages"][0]["epochs"] == 7 and DOC["recipe"]["stages"][0]["epochs"] == 2
    assert get_path(out, "recipe.stages.-1.name") == "pre"
    assert set_path(DOC, "recipe.new", 1, create=True)["recipe"]["new"] == 1
    assert set_path(DOC, "recipe.schedule.peak", 2, create=True)["recipe"]["schedule"] == {"peak": 2}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("recipe.epoch", "s.yaml: recipe.epoch: no key 'epoch' at 'recipe' (did you mean 'epochs'?)"),
        (
            "recipe.stages.3.epochs",
            "s.yaml: recipe.stages.3.epochs: 'recipe.stages' is a list of 1; '3' is not an index",
        ),
        ("graph.x", "s.yaml: graph.x: 'graph' is a str, not a mapping or list"),
        ("recip.epochs", "s.yaml: recip.epochs: no key 'recip' at '<top>' (did you mean 'recipe'?)"),
    ],
)
def test_bad_paths_are_one_line_errors(path: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        set_path(DOC, path, 1, file="s.yaml")
    assert str(err.value).startswith(message)


def test_parse_assignment_reads_yaml_values() -> None:
    assert parse_assignment("recipe.lr=1e-4") == ("recipe.lr", 1e-4)
    assert parse_assignment("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_assignment("a=null") == ("a", None)
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        parse_assignment("novalue")
