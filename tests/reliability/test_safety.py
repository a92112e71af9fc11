"""Safety: YAML never constructs Python objects, aliases cannot blow a document up, and no study field names a
Python import path (blocks and templates come only from the installed ``crmlab.blocks``/``crmlab.templates`` entry
points)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crmlab.registry import CrmlabError, core, load_graph, parse_graph, resolve_graph, yamlio
from crmlab.runners.studyfile import load_train_study
from crmlab.search.ablation import load_ablation
from tests.reliability.workspace import edit_yaml, make_workspace

MARKER = "pwned"
PAYLOADS = [
    f"!!python/object/apply:os.system ['touch {MARKER}']",
    f"!!python/object/new:subprocess.Popen [[touch, {MARKER}]]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:pathlib.PurePath {}",
    "!include secrets.yaml",
]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRMLAB_CACHE", str(tmp_path / "cache"))
    return make_workspace(tmp_path)


def _inject(path: Path, key: str, payload: str) -> None:
    """Put a raw YAML ``payload`` at top-level ``key`` of the file (plain text: the payload is not data)."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith(f"{key}:")]
    path.write_text("\n".join([*lines, f"{key}: {payload}", ""]))


SURFACES: dict[str, Callable[[Path, str], Any]] = {
    "graph spec": lambda root, p: (
        _inject(root / "studies" / "tiny_graph.yaml", "description", p),
        load_graph(root / "studies" / "tiny_graph.yaml"),
    ),
    "graph named by a train study": lambda root, p: (
        _inject(root / "studies" / "tiny_graph.yaml", "description", p),
        load_train_study(root / "studies" / "train.yaml"),
    ),
    "train study": lambda root, p: (
        _inject(root / "studies" / "train.yaml", "description", p),
        load_train_study(root / "studies" / "train.yaml"),
    ),
    "recipe file": lambda root, p: (
        (root / "studies" / "recipe.yaml").write_text(f"seed: {p}\nstages: [{{name: a, data: dream}}]\n"),
        edit_yaml(root / "studies" / "train.yaml", {"recipe": "recipe.yaml"}),
        load_train_study(root / "studies" / "train.yaml"),
    ),
    "ablation study": lambda root, p: (
        _inject(root / "studies" / "ablation.yaml", "description", p),
        load_ablation(root / "studies" / "ablation.yaml", assemble=False),
    ),
    "--set value": lambda root, p: load_train_study(root / "studies" / "train.yaml", [f"recipe.seed={p}"]),
    "ablation --set value": lambda root, p: load_ablation(
        root / "studies" / "ablation.yaml", [f"variants.x={{set: {{recipe.seed: {p} }}}}"], assemble=False
    ),
}


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("surface", list(SURFACES))
def test_object_tags_are_rejected_on_every_loader(surface: str, payload: str, workspace: Path) -> None:
    with pytest.raises(CrmlabError, match="tags are not allowed") as err:
        SURFACES[surface](workspace, payload)
    assert len(str(err.value).splitlines()) == 1
    assert not (workspace / MARKER).exists(), "the payload ran"


def test_an_alias_bomb_is_rejected_before_it_expands() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]  # 9**10 values written out
    with pytest.raises(CrmlabError, match=r"aliases expand it beyond 1,000,000 values"):
        yamlio.loads("\n".join(levels), "bomb.yaml")
    with pytest.raises(CrmlabError, match="recursive alias"):
        yamlio.loads("a: &a [1, *a]", "loop.yaml")
    assert yamlio.loads("a: &a {x: 1}\nb: *a") == {"a": {"x": 1}, "b": {"x": 1}}, "ordinary aliases still work"


@pytest.mark.parametrize("name", ["crmlab_bait.run", "crmlab_bait:run", "os.system", "builtins:eval"])
def test_a_block_or_template_named_by_import_path_is_just_unknown(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "crmlab_bait.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef run(*a, **k): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # importable, so naming it would import it (and write the marker)
    spec = {"inputs": {"seq": {"shape": [112]}}, "nodes": {"x": {"block": name, "inputs": ["seq"]}}, "outputs": ["x"]}
    with pytest.raises(CrmlabError, match=rf"nodes\.x\.block: no block '{name}'"):
        resolve_graph(parse_graph(spec, "g.yaml"))
    with pytest.raises(CrmlabError, match=rf"template\.name: no template '{name}'"):
        resolve_graph(parse_graph({"template": {"name": name}}, "g.yaml"))
    assert not marker.exists() and "crmlab_bait" not in sys.modules


def test_blocks_and_templates_come_only_from_entry_points() -> None:
    from importlib.metadata import entry_points

    for group, registry in (("crmlab.blocks", core.blocks()), ("crmlab.templates", core.templates())):
        declared = {ep.name for ep in entry_points(group=group)}
        assert set(registry.names()) <= declared, set(registry.names()) - declared
