"""Training recipes and train studies: typed, validated documents (no Keras import).

A recipe says *how* to train (loss, optimiser, learning-rate schedule, batch, precision, distribution, stages); a
train study says *what*: the graph spec, the data sets, the test sets and the recipe (inline or a file). Learning
rates and the batch size are per replica: with ``lr_scaling: linear`` the learning rates are multiplied by the
number of replicas R and the global batch is ``batch_size * R``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crmlab.registry import Issue, SpecError, SpecErrors, did_you_mean, pydantic_issues, yamlio
from crmlab.runners.data import DataSource

__all__ = [
    "MONITORS",
    "OPERATIONAL",
    "EarlyStopping",
    "Loss",
    "Recipe",
    "Schedule",
    "Split",
    "Stage",
    "Strict",
    "StudyDoc",
    "TrainStudy",
    "check_study_document",
    "inline_recipe",
    "parse_recipe",
    "parse_train_study",
    "recipe_issues",
    "referenced_file",
]

MONITORS = ("val_loss", "val_r2", "val_pearson_r", "val_mse")

OPERATIONAL = frozenset({"steps_per_execution"})
"""Recipe fields that change how a run is executed, not its result: left out of run and stage keys."""


class Strict(BaseModel):
    """Base of the study and recipe documents: unknown keys are errors, values are not coerced, fields are frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Loss(Strict):
    """Regression loss: ``huber`` (with ``delta``) or ``mse``."""

    name: Literal["huber", "mse"] = "huber"
    delta: float = 1.0


class Schedule(Strict):
    """Learning rate per step, from epochs: linear warm-up ``initial -> peak`` over ``warmup_epochs``, then

    ``cosine`` decay to ``final`` by the stage's last epoch (the paper), or ``flat`` at ``peak`` (the reference
    code, whose "cosine" has equal base and final rates), or ``constant`` at ``peak`` with no warm-up.
    """

    kind: Literal["cosine", "flat", "constant"] = "cosine"
    warmup_epochs: int = Field(default=10, ge=0)
    initial: float = Field(default=1e-4, gt=0)
    peak: float = Field(default=1e-3, gt=0)
    final: float = Field(default=1e-4, gt=0)

    def rate(self, epoch: float, epochs: int) -> float:
        """Learning rate at a fractional ``epoch`` of a stage of ``epochs`` epochs (unscaled)."""
        if self.kind == "constant":
            return self.peak
        if epoch < self.warmup_epochs:
            return self.initial + (self.peak - self.initial) * epoch / self.warmup_epochs
        if self.kind == "flat":
            return self.peak
        span = max(epochs - self.warmup_epochs, 1)
        t = min(max((epoch - self.warmup_epochs) / span, 0.0), 1.0)
        return self.final + 0.5 * (self.peak - self.final) * (1 + math.cos(math.pi * t))


class EarlyStopping(Strict):
    """Stop a stage when ``monitor`` has not improved for ``patience`` epochs; restore the best weights."""

    monitor: str = "val_r2"
    patience: int = Field(default=10, ge=1)
    restore_best: bool = True

    @field_validator("monitor")
    @classmethod
    def _known_monitor(cls, monitor: str) -> str:
        if monitor not in MONITORS:
            raise ValueError(f"monitor '{monitor}' is not logged{did_you_mean(monitor, MONITORS)}")
        return monitor

    @property
    def mode(self) -> str:
        return "min" if self.monitor in ("val_loss", "val_mse") else "max"


class Split(Strict):
    """How a stage's data is split into training and validation: ``random``, ``group`` (by the source's
    ``group_column``; never splits a group) or ``files`` (``validation`` names another data set)."""

    method: Literal["random", "group", "files"] = "random"
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    validation: str | None = None


class Stage(Strict):
    """One training stage; unset fields inherit from the recipe.

    ``keep_previous`` (WiSE-FT, Wortsman et al. 2022): after the stage (and after restoring its best epoch), the
    weights become ``keep_previous * before + (1 - keep_previous) * after``, where ``before`` are the weights the
    stage started from. Fine-tuning on a narrow set then keeps part of what the previous stage learnt; 0 is off.
    """

    name: str
    data: str
    split: Split = Split()
    epochs: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    schedule: Schedule | None = None
    early_stopping: EarlyStopping | None = None
    standardize: bool = True
    keep_previous: float = Field(default=0.0, ge=0, lt=1)


class Recipe(Strict):
    """How to train. See the module docstring for per-replica quantities.

    ``reverse_complement`` replaces a random half of every training batch by its reverse complement;
    ``average_reverse_complement`` exports a model that predicts the mean for a sequence and its reverse
    complement (it changes no weight, so stages cached without it are reused).

    ``seed`` fixes the data split and the batch order; ``init_seed`` (default: ``seed``) fixes weight initialisation
    and the dropout streams, so two runs that differ only in ``init_seed`` see the same data in the same order (an
    ablation's A/A control). Left unset it is not part of the run key, which keeps the keys of existing runs.

    ``deterministic`` turns TensorFlow's op determinism on while the run trains (GPU kernels become
    bit-reproducible, and slower; a CPU run is bit-reproducible without it). It enters run keys only where a recipe
    sets it: a recipe that leaves it out hashes ``false``, as every key made before did, so a change of its default
    changes no existing key.

    ``steps_per_execution`` runs that many training steps per call into the compiled step function (Keras'
    ``compile(steps_per_execution=...)``), which saves the per-step dispatch on an accelerator. It changes how steps
    are launched, not what they compute, so it is an operational setting and never part of a run key
    (:data:`OPERATIONAL`).
    """

    seed: int = 0
    init_seed: int | None = Field(default=None, ge=0)
    loss: Loss = Loss()
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    clipnorm: float | None = None
    batch_size: int = Field(default=64, ge=1)
    epochs: int = Field(default=50, ge=1)
    schedule: Schedule = Schedule()
    lr_scaling: Literal["linear", "none"] = "linear"
    early_stopping: EarlyStopping = EarlyStopping()
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    strategy: Literal["auto", "none", "mirrored", "multi_worker", "tpu", "data_parallel"] = "auto"
    jit_compile: bool | Literal["auto"] = "auto"
    steps_per_execution: int = Field(default=1, ge=1)
    reverse_complement: bool = False
    average_reverse_complement: bool = False
    deterministic: bool = False
    stages: list[Stage] = Field(min_length=1)

    @property
    def stream_seed(self) -> int:
        """The seed of weight initialisation and dropout: ``init_seed``, or ``seed`` when unset."""
        return self.seed if self.init_seed is None else self.init_seed

    def stage_epochs(self, stage: Stage) -> int:
        return stage.epochs or self.epochs

    def stage_schedule(self, stage: Stage) -> Schedule:
        return stage.schedule or self.schedule

    def stage_early_stopping(self, stage: Stage) -> EarlyStopping:
        return stage.early_stopping or self.early_stopping


class StudyDoc(Strict):
    """The keys every study kind has: its name, the graph spec file, the data and test sets and the recipe.

    Each kind (``train`` here, ``ablation`` and ``search`` in :mod:`crmlab.search`) subclasses it, fixing ``kind``
    and adding its own keys. The recipe is a mapping, validated once each ablation variant or search trial has
    patched it; a train study validates it as a :class:`Recipe` at once.
    """

    kind: str
    name: str
    description: str = ""
    graph: str
    data: dict[str, DataSource]
    test_sets: dict[str, DataSource] = Field(min_length=1)
    recipe: dict[str, Any]

    @classmethod
    def parse(cls, doc: dict[str, Any], file: str) -> Self:
        """Validate a study document (its recipe already inlined); every problem is an issue of ``file``."""
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise SpecErrors(pydantic_issues(exc, file, cls)) from None


class TrainStudy(StudyDoc):
    """``kind: train``: one model trained by one recipe and evaluated on named test sets."""

    kind: Literal["train"] = "train"
    test_sets: dict[str, DataSource] = Field(default_factory=dict)
    recipe: Recipe
    source: str = Field(default="", exclude=True)

    @classmethod
    def parse(cls, doc: dict[str, Any], file: str) -> Self:
        """Validate the document and its recipe's references to the data sets; ``source`` records ``file``."""
        study = super().parse({**doc, "source": file}, file)
        issues = recipe_issues(study.recipe, study.data, file)
        if issues:
            raise SpecErrors(issues)
        return study


def recipe_issues(recipe: Recipe, data: Mapping[str, DataSource], file: str, prefix: str = "recipe") -> list[Issue]:
    """Problems of a recipe's references to the study's data sets (unknown names, group splits without groups)."""
    issues = []
    for i, stage in enumerate(recipe.stages):
        where = f"{prefix}.stages.{i}"
        if stage.data not in data:
            hint = did_you_mean(stage.data, data)
            issues.append(Issue(file, f"{where}.data", f"no data set '{stage.data}'{hint}"))
        elif stage.split.method == "group" and not data[stage.data].group_column:
            issues.append(Issue(file, f"{where}.split.method", f"'group' needs data.{stage.data}.group_column"))
        if i == 0 and stage.keep_previous:
            issues.append(Issue(file, f"{where}.keep_previous", "the first stage has no previous weights to keep"))
        if stage.split.method == "files" and stage.split.validation not in data:
            v = str(stage.split.validation)
            issues.append(Issue(file, f"{where}.split.validation", f"no data set '{v}'{did_you_mean(v, data)}"))
    names = [s.name for s in recipe.stages]
    for i, n in enumerate(names):
        if names.index(n) != i:
            issues.append(Issue(file, f"{prefix}.stages.{i}.name", f"stage name '{n}' is used twice"))
    return issues


def parse_recipe(doc: Any, data: Mapping[str, DataSource], file: str, prefix: str = "recipe") -> Recipe:
    """Validate a recipe document against the study's data sets; issues carry ``prefix`` in their key paths."""
    try:
        recipe = Recipe.model_validate(doc)
    except ValidationError as exc:
        raise SpecErrors(pydantic_issues(exc, file, Recipe, prefix=prefix)) from None
    issues = recipe_issues(recipe, data, file, prefix)
    if issues:
        raise SpecErrors(issues)
    return recipe


def referenced_file(base_dir: Path, name: str, file: str, key: str) -> Path:
    """The file a study key names (relative to ``base_dir``); a missing one is ``FILE: key: no such file NAME``."""
    try:
        path = base_dir / name
        found = path.is_file()
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long for the file system
        raise SpecError(file, key, f"cannot use {name!r} as a file name: {exc}") from None
    if not found:
        raise SpecError(file, key, f"no such file {path}" if not path.is_dir() else f"{path} is a folder, not a file")
    return path


def inline_recipe(doc: dict[str, Any], base_dir: Path, file: str) -> dict[str, Any]:
    """Replace ``recipe: FILE`` (relative to ``base_dir``) by the file's mapping, so ``--set recipe.x`` reaches it."""
    if isinstance(doc.get("recipe"), str):
        recipe = yamlio.load(referenced_file(base_dir, doc["recipe"], file, "recipe"))
        if not isinstance(recipe, dict):
            raise SpecError(file, "recipe", f"{doc['recipe']} must hold a mapping")
        doc = {**doc, "recipe": recipe}
    return doc


def check_study_document(doc: Any, file: str) -> None:
    """A study document must be a mapping: an empty file or a list is a one-line error."""
    if doc is None:
        raise SpecError(file, "", "the file is empty; a study needs kind, name, graph, data and recipe")
    if not isinstance(doc, dict):
        raise SpecError(file, "", f"a study must be a mapping, got {type(doc).__name__}")


def parse_train_study(doc: Any, file: str, base_dir: Path | None = None) -> TrainStudy:
    """Validate a train-study document. ``recipe`` may be a mapping or a path (relative to the study file)."""
    check_study_document(doc, file)
    doc = inline_recipe(doc, base_dir if base_dir is not None else Path(file).parent, file)
    return TrainStudy.parse(doc, file)
