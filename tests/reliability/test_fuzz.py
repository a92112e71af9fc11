"""Property: any YAML document or any data fed to a spec or study loader gives a valid object or the documented
error (:class:`registry.errors.CrmlabError` and its subclasses), never another exception.

Documents are drawn three ways: arbitrary YAML-ish text, arbitrary nested data, and valid documents (the tiny test
studies and graph) with one to three random edits (a value replaced, a key removed or added, a list emptied), which
reach the deep checks. The default run tries ``DEFAULT_EXAMPLES`` per loader; ``pytest -m slow`` tries
``SLOW_EXAMPLES`` per loader. Loaders that read files run on a scratch copy of the studies and data; the train and
ablation loaders load the data but never import Keras (``assemble=False``).
"""

from __future__ import annotations

import copy
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry import yamlio
from registry.errors import CrmlabError
from registry.spec import GraphSpec, parse_graph
from registry.validate import resolve_graph
from runners.data import DataSource
from runners.recipe import Recipe, TrainStudy, parse_recipe, parse_train_study
from runners.study import LoadedStudy, load_train_study
from search.ablation import Ablation, load_ablation
from tests.reliability.workspace import FIXTURES, make_workspace

DEFAULT_EXAMPLES = 60
SLOW_EXAMPLES = 10_000
EXAMPLES_RUN: dict[str, int] = {}
"""Examples each loader was fed in this session (``pytest -s`` prints them)."""

TRAIN = yamlio.load(FIXTURES / "studies" / "tiny_train.yaml")
ABLATION = yamlio.load(FIXTURES / "studies" / "tiny_ablation.yaml")
GRAPH = yamlio.load(FIXTURES / "studies" / "tiny_graph.yaml")
EXPLICIT_GRAPH = resolve_graph(parse_graph(GRAPH)).to_dict()
DATA = {"dream": DataSource(path="d.tsv", group_column="cluster"), "random_library": DataSource(path="r.tsv")}


def _keys(doc: Any) -> Iterator[str]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield str(k)
            yield from _keys(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _keys(v)


WORDS = sorted(
    {*_keys(TRAIN), *_keys(ABLATION), *_keys(EXPLICIT_GRAPH), "too_long", "truncate", "group", "files", "as_n"}
    | {"os.system", "builtins:eval", "se_conv_encoder", "mlp_head", "crmnet_unet", "val_loss", "enc1.skip", "seq"}
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-3, 300),
    st.floats(),
    st.sampled_from(WORDS),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=8), inner),
    max_leaves=10,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """``base`` with one to three random edits."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        if not path:
            doc = draw(values)
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "empty"]))
        if op == "replace":
            parent[path[-1]] = draw(values)
        elif op == "delete":
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(WORDS))] = draw(values)
        elif op == "empty":
            parent[path[-1]] = type(parent[path[-1]])() if isinstance(parent[path[-1]], dict | list) else None
    return doc


FRAGMENTS = [
    "a: 1", "- x", "  b: [1, 2", "{", "}", "]", "&x [1]", "*x", "*y", "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system", "!!binary AAAA", "? k", ": v", "'", '"', "\t", "%YAML 1.1", "---", "...", "1e-4",
    "name: x", "name: y", "nodes: {a: {block: b}}", "<<: *x", "key: !!float nan", "|", ">-", "#", "\x00", "\ufeff",
]  # fmt: skip
yaml_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=8).map("\n".join),
    mutated(TRAIN).map(yamlio.dumps),
)


@dataclass(frozen=True)
class Loader:
    name: str
    strategy: Any
    load: Callable[[Path, Any], Any]
    """Called with the scratch workspace and the drawn value."""
    returns: type | tuple[type, ...]
    """What a successful load returns."""


def _write_and(loader: Callable[[Path], Any], name: str) -> Callable[[Path, Any], Any]:
    def load(root: Path, doc: Any) -> Any:
        path = root / "studies" / name
        path.write_text(doc if isinstance(doc, str) else yamlio.dumps(doc))
        return loader(path)

    return load


LOADERS = [
    Loader(
        "yaml",
        yaml_text,
        lambda root, text: yamlio.loads(text, "x.yaml"),
        (type(None), bool, int, float, str, list, dict, bytes, datetime.date),
    ),
    Loader(
        "graph",
        st.one_of(values, mutated(GRAPH), mutated(EXPLICIT_GRAPH)),
        lambda root, doc: resolve_graph(parse_graph(doc, "g.yaml")),
        GraphSpec,
    ),
    Loader(
        "recipe",
        st.one_of(values, mutated(TRAIN["recipe"])),
        lambda root, doc: parse_recipe(doc, DATA, "r.yaml"),
        Recipe,
    ),
    Loader(
        "train_study_doc",
        st.one_of(values, mutated(TRAIN)),
        lambda root, doc: parse_train_study(doc, str(root / "studies" / "t.yaml")),
        TrainStudy,
    ),
    Loader(
        "train_study_file",
        st.one_of(yaml_text, mutated(TRAIN)),
        _write_and(load_train_study, "fuzz_train.yaml"),
        LoadedStudy,
    ),
    Loader(
        "ablation_file",
        st.one_of(yaml_text, mutated(ABLATION)),
        _write_and(lambda p: load_ablation(p, assemble=False), "fuzz_ablation.yaml"),
        Ablation,
    ),
    Loader(
        "set_flag",
        st.lists(st.tuples(st.sampled_from(WORDS) | st.text(max_size=10), values), min_size=1, max_size=3),
        lambda root, sets: load_train_study(
            root / "studies" / "train.yaml", [f"{k}={yamlio.dumps(v).strip()}" for k, v in sets]
        ),
        LoadedStudy,
    ),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = make_workspace(tmp_path_factory.mktemp("fuzz"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRMLAB_CACHE", str(root / "cache"))
        mp.chdir(root)
        yield root
    if EXAMPLES_RUN:
        print("\nfuzz examples run:", EXAMPLES_RUN, "total", sum(EXAMPLES_RUN.values()))


def fuzz(loader: Loader, root: Path, examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(loader.strategy)
    def run(value: Any) -> None:
        EXAMPLES_RUN[loader.name] = EXAMPLES_RUN.get(loader.name, 0) + 1
        try:
            result = loader.load(root, value)
        except CrmlabError as exc:
            assert str(exc).strip(), "an error without a message"
            return
        assert isinstance(result, loader.returns), type(result)

    run()


@pytest.mark.parametrize("loader", LOADERS, ids=[x.name for x in LOADERS])
def test_fuzzed_input_gives_an_object_or_a_crmlab_error(loader: Loader, workspace: Path) -> None:
    fuzz(loader, workspace, DEFAULT_EXAMPLES)
    assert EXAMPLES_RUN[loader.name] >= DEFAULT_EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("loader", LOADERS, ids=[x.name for x in LOADERS])
def test_fuzzed_input_at_length(loader: Loader, workspace: Path) -> None:
    before = EXAMPLES_RUN.get(loader.name, 0)
    fuzz(loader, workspace, SLOW_EXAMPLES)
    assert EXAMPLES_RUN[loader.name] - before >= SLOW_EXAMPLES


def test_the_workspace_files_are_valid_to_start_with(workspace: Path) -> None:
    assert load_train_study(workspace / "studies" / "train.yaml").study.name == "tiny_train"
    assert len(load_ablation(workspace / "studies" / "ablation.yaml", assemble=False).variants) == 4
    assert os.environ["CRMLAB_CACHE"] == str(workspace / "cache")


@pytest.mark.parametrize("stages", [{"as_n": None}, 1])
def test_found_by_fuzzing_pretraining_off_on_stages_that_are_not_a_list(stages: Any, workspace: Path) -> None:
    doc = {**ABLATION, "recipe": {**ABLATION["recipe"], "stages": stages}}
    with pytest.raises(CrmlabError, match=r"recipe\.stages: must be a list of stages"):
        _write_and(lambda p: load_ablation(p, assemble=False), "fuzz_ablation.yaml")(workspace, doc)
