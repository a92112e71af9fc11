"""Studies on disk: reading, overriding and validating a study file, its graph and data (every kind), and
``crmlab train STUDY.yaml``'s loader.

:func:`read_study` reads any kind (the model class, a :class:`~crmlab.runners.studyfile._recipe.StudyDoc` subclass,
validates it), :func:`graph_document` and :func:`load_data` (:func:`load_study_data`) read what it references;
:func:`load_train_study` puts them together for a train study. The ablation and search loaders (:mod:`crmlab.search`)
share :func:`load_study_file`, which reads their study file and its graph document and reports the issues at keys
that ``--set`` wrote against the flag.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from crmlab.registry import GraphSpec, SpecError, SpecErrors, load_graph, resolve_graph, yamlio
from crmlab.runners.data import Dataset, load, split
from crmlab.runners.studyfile._overrides import apply_overrides, blame_overrides
from crmlab.runners.studyfile._recipe import (
    Recipe,
    StudyDoc,
    TrainStudy,
    check_study_document,
    inline_recipe,
    referenced_file,
)

__all__ = [
    "LoadedStudy",
    "check_assembles",
    "check_splits",
    "graph_document",
    "input_length",
    "load_data",
    "load_study_data",
    "load_study_file",
    "load_train_study",
    "read_study",
]

StudyT = TypeVar("StudyT", bound=StudyDoc)
LoadedT = TypeVar("LoadedT")


def check_splits(recipe: Recipe, datasets: dict[str, Dataset], file: str, seeds: Sequence[int]) -> None:
    """Split every stage's data as training will (for each seed), so a split that leaves training or validation
    empty is ``FILE: recipe.stages.N.split: ...`` before anything is written, not a failure mid-run."""
    for seed in seeds:
        for i, stage in enumerate(recipe.stages):
            if stage.split.method == "files":
                continue
            frac = stage.split.validation_fraction
            try:
                split(datasets[stage.data], stage.split.method, (1 - frac, frac), seed)
            except SpecErrors as exc:
                message = exc.issues[0].message
                raise SpecError(file, f"recipe.stages.{i}.split", f"data set '{stage.data}': {message}") from None


def check_assembles(graph: GraphSpec, recipe: Recipe | None = None, file: str = "") -> int:
    """Build the model once (catches shape errors before anything is written); returns its parameter count.

    With a ``recipe`` that sets ``average_reverse_complement``, the strand-averaging export is built too, so a graph
    it cannot wrap is ``FILE: recipe.average_reverse_complement: ...`` now rather than after training.
    """
    import keras

    from crmlab.blocks.assemble import assemble, parameter_counts, reverse_complement_average

    try:
        model = assemble(graph)
        if recipe is not None and recipe.average_reverse_complement:
            try:
                reverse_complement_average(model)
            except ValueError as exc:
                raise SpecError(file, "recipe.average_reverse_complement", str(exc)) from None
        return parameter_counts(model)["total"]
    finally:
        # Drop Keras' global graph state, but skip its full gc.collect(): in a long-lived process (a search that
        # checks many candidates, the test suite) a collection over a large heap costs seconds per call.
        keras.backend.clear_session(free_memory=False)


def read_study(path: Path, overrides: Sequence[str], model: type[StudyT]) -> StudyT:
    """Read the study file ``path``, inline its recipe file, apply the ``--set`` ``overrides`` and validate it as
    ``model``; issues at keys the overrides set are reported against ``--set``."""
    file = str(path)
    doc = yamlio.load(path)
    check_study_document(doc, file)
    doc = apply_overrides(inline_recipe(doc, path.parent, file), overrides, file)
    try:
        return model.parse(doc, file)
    except SpecErrors as exc:
        raise blame_overrides(exc, overrides) from None


def graph_document(study: StudyDoc, path: Path) -> tuple[Path, dict[str, Any]]:
    """The graph spec file that the study at ``path`` names and its document (a mapping, not yet validated)."""
    graph_file = referenced_file(path.parent, study.graph, str(path), "graph")
    doc = yamlio.load(graph_file)
    if not isinstance(doc, dict):
        raise SpecError(str(graph_file), "", "a graph spec must be a mapping")
    return graph_file, doc


def load_study_file(
    path: str | Path,
    overrides: Sequence[str],
    model: type[StudyT],
    build: Callable[[Path, list[str], StudyT, Path, dict[str, Any]], LoadedT],
) -> LoadedT:
    """Load a study of a kind that patches its base graph (ablation, search): read the study file ``path`` as
    ``model`` (:func:`read_study`) and the graph document it names (:func:`graph_document`), then hand them to
    ``build``, which checks and loads the rest.

    Args:
        path: the study file.
        overrides: the ``--set KEY=VALUE`` assignments applied to it.
        model: the study document's class (its kind's schema).
        build: called with the study file's path, the overrides, the validated document, the graph file and its
            document (a mapping, not yet validated); returns the loaded study.

    Returns:
        What ``build`` returns.

    Raises:
        SpecErrors: every problem, ``FILE: key.path: message``; issues at keys that ``overrides`` set, here or in
            ``build``, are reported against ``--set``.
    """
    try:
        path, overrides = Path(path), list(overrides)
        doc = read_study(path, overrides, model)
        graph_file, graph_doc = graph_document(doc, path)
        return build(path, overrides, doc, graph_file, graph_doc)
    except SpecErrors as exc:
        raise blame_overrides(exc, overrides) from None


def input_length(graph: GraphSpec) -> int:
    """The sequence length of the graph's first input, to which the study's data sets are encoded."""
    return graph.inputs[next(iter(graph.inputs))].shape[0]


def load_data(study: StudyDoc, length: int, base_dir: Path) -> tuple[dict[str, Dataset], dict[str, Dataset]]:
    """Load and encode (cached) the study's data sets and test sets, sequences of ``length``; file names are
    relative to ``base_dir``. Returns ``(data sets, test sets)`` by name."""
    datasets = {
        name: load(src, length=length, base_dir=base_dir, name=name, key=f"data.{name}")
        for name, src in study.data.items()
    }
    tests = {
        name: load(src, length=length, base_dir=base_dir, name=name, key=f"test_sets.{name}")
        for name, src in study.test_sets.items()
    }
    return datasets, tests


def load_study_data(study: StudyDoc, graph: GraphSpec, path: Path) -> tuple[dict[str, Dataset], dict[str, Dataset]]:
    """:func:`load_data` for the study file ``path``: sequences of the ``graph``'s input length
    (:func:`input_length`), file names relative to the study file's folder. Returns ``(data sets, test sets)``."""
    return load_data(study, input_length(graph), path.parent)


@dataclass
class LoadedStudy:
    """A validated study with its resolved graph and loaded data, ready to train."""

    study: TrainStudy
    graph: GraphSpec
    datasets: dict[str, Dataset]
    tests: dict[str, Dataset]


def load_train_study(path: str | Path, overrides: Sequence[str] = (), assemble: bool = False) -> LoadedStudy:
    """Read, override, validate; resolve the graph; load and encode every data and test set (cached); check each
    stage's split and (with ``assemble``) build the model once, so every mistake shows before anything is written."""
    path = Path(path)
    file = str(path)
    study = read_study(path, overrides, TrainStudy)
    graph = resolve_graph(load_graph(referenced_file(path.parent, study.graph, file, "graph")))
    datasets, tests = load_study_data(study, graph, path)
    check_splits(study.recipe, datasets, file, [study.recipe.seed])
    if assemble:
        check_assembles(graph, study.recipe, file)
    return LoadedStudy(study, graph, datasets, tests)
