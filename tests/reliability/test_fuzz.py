"""Property: any YAML document or any data fed to a spec or study loader gives a valid object or the documented
error (:class:`crmlab.registry.errors.CrmlabError` and its subclasses), never another exception.

Documents are drawn three ways: arbitrary YAML-ish text, arbitrary nested data, and valid documents (the tiny test
studies and graph) with one to three random edits (a value replaced, a key removed or added, a list emptied), which
reach the deep checks. Search spaces are also drawn from their own grammar (parameter names a space may use, the
four types and near misses, bounds of every type, ``when`` strings of known names, operators and YAML values) and fed
to :func:`crmlab.registry.space.parse_space` directly and, inside the tiny search study, to
:func:`crmlab.search.arch._study.load_search`. The default run tries ``DEFAULT_EXAMPLES`` per loader; ``pytest -m slow``
tries ``SLOW_EXAMPLES`` per loader. Loaders that read files run on a scratch copy of the studies and data; the train,
ablation and search loaders load the data but never import Keras (``assemble=False``).
"""

from __future__ import annotations

import copy
import datetime
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmlab.registry import CrmlabError, GraphSpec, Space, parse_graph, parse_space, resolve_graph, yamlio
from crmlab.registry.templates import crmnet_unet
from crmlab.registry.variants import SHORTCUTS
from crmlab.runners.data import DataSource
from crmlab.runners.studyfile import Recipe, TrainStudy, load_train_study, parse_recipe
from crmlab.runners.studyfile._loader import LoadedStudy
from crmlab.runners.studyfile._recipe import parse_train_study
from crmlab.search.ablation import load_ablation
from crmlab.search.ablation._study import Ablation
from crmlab.search.arch import Search, load_search
from tests.reliability.workspace import FIXTURES, make_workspace

DEFAULT_EXAMPLES = 60
SLOW_EXAMPLES = 10_000
EXAMPLES_RUN: dict[str, int] = {}
"""Examples each loader was fed in this session (``pytest -s`` prints them)."""

TRAIN = yamlio.load(FIXTURES / "studies" / "tiny_train.yaml")
ABLATION = yamlio.load(FIXTURES / "studies" / "tiny_ablation.yaml")
SEARCH = yamlio.load(FIXTURES / "studies" / "tiny_search.yaml")
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
    {*_keys(TRAIN), *_keys(ABLATION), *_keys(SEARCH), *_keys(EXPLICIT_GRAPH), "too_long", "truncate", "group"}
    | {"os.system", "builtins:eval", "se_conv_encoder", "mlp_head", "crmnet_unet", "val_loss", "enc1.skip", "seq"}
    | {"files", "as_n", "grid", "tpe", "cmaes", "keras_tuner", "hyperband", "choice", "int", "float", "bool"}
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


TEMPLATE_PARAMS = {**inspect.signature(crmnet_unet).parameters, **GRAPH["template"]["params"]}
"""What a search over the tiny graph may name by bare name (load_search adds the template's defaults likewise)."""
VALID_SPACE_KEYS = sorted(
    {*SHORTCUTS, *TEMPLATE_PARAMS, *SEARCH["space"], "recipe.batch_size", "recipe.seed", "recipe.stages.0.epochs"}
    | {"template.params.depth", "nodes.enc1.params.filters"}
)
SPACE_KEYS = sorted(
    {*VALID_SPACE_KEYS, "kernal_size", "recipe.epochs", "recipe.stages.7.epochs", "nodes.nope.block", "template"}
    | {"recipe", "space", "a.b", "x"}
)
space_key = st.sampled_from(SPACE_KEYS) | st.text(max_size=8)
bound = st.one_of(
    st.integers(),
    st.integers(-3, 9),
    st.floats(),
    st.floats(1e-6, 1.0),
    st.sampled_from([2**63, -(2**63) - 1, 10**309, -(10**309)]),  # beyond int64 and float range, as YAML reads them
    st.sampled_from(["1e-4", "1e-4x", "3", "inf", ".nan", ""]),
    st.none(),
    st.booleans(),
)
OPERATORS = ["==", "==", "!=", "in", "in", "=", "is", "not in", "<", ""]
CONDITION_VALUES = ["true", "false", "1", "2", "4", "7", "[1, 2]", "[2, 4]", "[true]", "[false, true]", "[]", "0.001"]
condition_value = st.sampled_from([*CONDITION_VALUES, "1e-4", "null", "'a'", "[", "{a: 1}", "x", ".nan"]) | st.text(
    max_size=6
)


def conditions(names: st.SearchStrategy[str], plausible: bool = False) -> st.SearchStrategy[str]:
    """``when`` strings: one to three ``NAME OP VALUE`` joined by ``and`` (``plausible``: only the three operators,
    values that the generated parameters may take)."""
    ops, value = (["==", "!=", "in"], st.sampled_from(CONDITION_VALUES)) if plausible else (OPERATORS, condition_value)
    one = st.tuples(names, st.sampled_from(ops), value).map(" ".join)
    return st.lists(one, min_size=1, max_size=3).map(" and ".join)


when = st.one_of(conditions(space_key), st.text(max_size=20), values)
choice_value = st.integers(1, 8) | st.booleans() | st.sampled_from(["a", "relu", "gelu", 0.5, None])
choice_values = st.lists(choice_value, min_size=1, max_size=4, unique_by=repr)
typed_declaration = st.one_of(
    st.fixed_dictionaries({"type": st.just("choice"), "values": choice_values}),
    st.fixed_dictionaries(
        {"type": st.just("int"), "low": st.integers(-3, 9), "high": st.integers(-3, 12)},
        optional={"step": st.integers(1, 4), "log": st.booleans()},
    ),
    st.fixed_dictionaries(
        {"type": st.just("float"), "low": st.floats(0, 1) | st.integers(0, 3), "high": st.floats(0, 1)},
        optional={"step": st.floats(1e-3, 0.5), "log": st.booleans()},
    ),
    st.fixed_dictionaries({"type": st.just("bool")}),
)
"""A declaration of one of the four types with plausible fields (bounds may still be crossed, steps zero)."""


@st.composite
def well_formed_space(draw: st.DrawFn) -> dict[str, Any]:
    """Names a space may use, typed declarations, and conditions that mostly name earlier parameters."""
    space: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(VALID_SPACE_KEYS), min_size=1, max_size=5, unique=True)):
        decl = {"type": "bool"} if key in SHORTCUTS and draw(st.booleans()) else draw(typed_declaration)
        if space and draw(st.booleans()):
            earlier = st.sampled_from([k for k, v in space.items() if v["type"] != "float"] or list(space))
            decl["when"] = draw(conditions(earlier, plausible=True) | conditions(earlier | space_key))
        space[key] = decl
    return space


declaration = st.one_of(
    typed_declaration,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["choice", "int", "float", "bool"])},
        optional={
            "values": choice_values | st.lists(choice_value, max_size=4) | values,
            "low": bound,
            "high": bound,
            "step": bound,
            "log": st.booleans() | values,
            "when": when,
            "stp": values,
            "kind": values,
        },
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["chioce", "Int", "", "str"]) | values}),
    values,
)
space_doc = st.one_of(
    well_formed_space(),
    well_formed_space(),
    well_formed_space().flatmap(mutated),
    st.dictionaries(space_key, declaration, min_size=1, max_size=5),
    values,
)
"""A ``space`` mapping: well-formed, well-formed with one to three random edits, random declarations, anything."""


@st.composite
def search_with_space(draw: st.DrawFn, spaces: st.SearchStrategy[Any] = space_doc) -> dict[str, Any]:
    """The tiny search study with a drawn space (merged into or replacing its own) and maybe another sampler."""
    doc = copy.deepcopy(SEARCH)
    space = draw(spaces)
    if isinstance(space, dict) and draw(st.booleans()):
        space = {**doc["space"], **space}
    doc["space"] = space
    if draw(st.booleans()):
        doc["optuna"]["sampler"] = draw(st.sampled_from(["grid", "tpe", "cmaes", "random"]))
    return doc


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
        "space",
        st.tuples(space_doc, st.sampled_from([TEMPLATE_PARAMS, None])),
        lambda root, drawn: parse_space(drawn[0], "s.yaml", drawn[1]),
        Space,
    ),
    Loader(
        "search_file",
        st.one_of(yaml_text, mutated(SEARCH), search_with_space(), search_with_space(well_formed_space())),
        _write_and(lambda p: load_search(p, assemble=False), "fuzz_search.yaml"),
        Search,
    ),
    Loader(
        "search_set_flag",
        st.lists(st.tuples(st.sampled_from(WORDS) | space_key, values), min_size=1, max_size=3),
        lambda root, sets: load_search(
            root / "studies" / "search.yaml", [f"{k}={yamlio.dumps(v).strip()}" for k, v in sets], assemble=False
        ),
        Search,
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
    assert len(load_search(workspace / "studies" / "search.yaml", assemble=False).space) == len(SEARCH["space"])
    assert os.environ["CRMLAB_CACHE"] == str(workspace / "cache")


@pytest.mark.parametrize("stages", [{"as_n": None}, 1])
def test_found_by_fuzzing_pretraining_off_on_stages_that_are_not_a_list(stages: Any, workspace: Path) -> None:
    doc = {**ABLATION, "recipe": {**ABLATION["recipe"], "stages": stages}}
    with pytest.raises(CrmlabError, match=r"recipe\.stages: must be a list of stages"):
        _write_and(lambda p: load_ablation(p, assemble=False), "fuzz_ablation.yaml")(workspace, doc)


@pytest.mark.parametrize("low", [10**309, -(10**309), 2**1024])
def test_found_by_fuzzing_a_float_bound_beyond_float_range_is_an_error(low: int) -> None:
    # was OverflowError from float(low) in FloatParam's int-to-float conversion
    with pytest.raises(
        CrmlabError, match=r"s\.yaml: space\.recipe\.schedule\.peak\.low: input should be a valid number"
    ):
        parse_space({"recipe.schedule.peak": {"type": "float", "low": low, "high": 1.0}}, "s.yaml")


def test_grid_over_a_huge_int_range_is_an_error_not_a_memory_error(workspace: Path) -> None:
    # was MemoryError: the grid check listed every value of the int parameter
    space = {k: v for k, v in SEARCH["space"].items() if v["type"] != "float"}
    doc = {
        **SEARCH,
        "optuna": {"sampler": "grid"},
        "space": {**space, "recipe.seed": {"type": "int", "low": 0, "high": 10**12}},
    }
    with pytest.raises(CrmlabError, match=r"optuna\.sampler: grid: recipe\.seed has more than 10,000 values"):
        _write_and(lambda p: load_search(p, assemble=False), "fuzz_search.yaml")(workspace, doc)
