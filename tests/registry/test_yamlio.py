"""Safe YAML: numbers as YAML 1.2 reads them, duplicate keys and object tags rejected."""

from __future__ import annotations

import pytest

from crmlab.registry import SpecError, yamlio


def test_exponent_floats_are_numbers() -> None:
    assert yamlio.loads("a: 1e-4\nb: 3E2\nc: 1.0e-4\nd: 12\ne: '1e-4'") == {
        "a": 1e-4, "b": 300.0, "c": 1e-4, "d": 12, "e": "1e-4",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", "f.yaml:3: invalid YAML: duplicate key 'a' (first at line 1)"),
        ("x: !!python/object/apply:os.system ['echo hi']\n", "tags are not allowed"),
        ("x: !!python/name:os.system\n", "tags are not allowed"),
        ("a: [1, 2\n", "f.yaml:"),
    ],
)
def test_bad_yaml_is_one_line_error(text: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        yamlio.loads(text, "f.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path: object) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: no such file"):
        yamlio.load("nope.yaml")
