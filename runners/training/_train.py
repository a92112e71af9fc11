"""The single training path: spec + recipe + data + seed -> trained model + test metrics (+ MLflow run).

Ablation variants and search trials all come through :func:`train_run`. A run lives in
``RUNS_DIR/<run key>/``, the key being a hash of (resolved spec, recipe, data, seed)
(:mod:`crmlab.runners.rundir._runkey`);
after every epoch it commits a checkpoint (weights, optimiser state, early-stopping state, history) by atomically
replacing ``state.json`` (:mod:`crmlab.runners.rundir._checkpoint`), so a run killed at any point resumes from its last
completed epoch with the same command, in the same MLflow run. The stages run in order; a stage whose key another
run has already trained is loaded from the stage cache. After the last stage the model is exported (strand averaging,
target scale), evaluated on the test sets and on the last stage's validation split, and its outputs written
(:mod:`crmlab.runners.rundir._results`). Once they are written and MLflow has them, the run's resumable state is deleted
(:mod:`crmlab.runners.rundir._retention`; ``CRMLAB_KEEP_STATE=1`` keeps it). A run started for a study is recorded in
the runs folder's manifest (:mod:`crmlab.runners.rundir._manifest`).

Determinism: Python, NumPy and backend seeds are set from ``recipe.stream_seed`` (``init_seed``, or ``seed``), data
splits and batch order depend on ``recipe.seed`` alone, dropout streams on the stream seed, stage and epoch, and the
model's names are those of a fresh process (:mod:`crmlab.runners.training._compiled`). So on one CPU and backend a
run's result is a function of its key, bit for bit: trained in a fresh process, in a worker after other runs, or on
a kept compiled model. GPU kernels are not bit-reproducible unless ``recipe.deterministic`` (TensorFlow op
determinism; slower), which is on for that run only: the process-wide switch is put back when the run ends.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import keras
import numpy as np

from crmlab.blocks.assemble import parameter_counts
from crmlab.registry import GraphSpec
from crmlab.runners.data import Dataset
from crmlab.runners.parallel import (
    ALLOW_DEVICE_CHANGE,
    Distribution,
    current_slot,
    is_chief,
    join_processes,
    local_rows,
    process_count,
    process_index,
    record_devices,
    record_placement,
    run_folder,
)
from crmlab.runners.rundir import (
    BEST,
    WEIGHTS,
    CheckpointState,
    Owner,
    RunResult,
    checkpoint_file,
    clean_finished,
    data_hashes,
    digest,
    drop_state,
    keep_previous,
    keep_state,
    load_optimizer,
    load_result,
    load_stage,
    load_variables,
    record_run,
    run_key,
    save_stage_start,
    stage_keys,
    store_stage,
)
from crmlab.runners.studyfile import Recipe, Stage
from crmlab.runners.tracking import Tracker, flatten, git_commit
from crmlab.runners.training._batches import Batches, InOrder
from crmlab.runners.training._compiled import TrainingModel, training_model
from crmlab.runners.training._epoch_control import EpochControl, EpochHook, log_pending
from crmlab.runners.training._evaluate import final_validation, predict, stage_split
from crmlab.runners.training._metrics import regression_metrics
from crmlab.runners.training._outputs import write_outputs
from crmlab.runners.training._seeding import seed_run

__all__ = ["ALLOW_DEVICE_CHANGE", "RunContext", "train_run"]


@dataclass(frozen=True)
class RunContext:
    """What one run is given: what to train on which data, its directory and key, and how it reports.

    Attributes:
        graph: the resolved graph spec.
        recipe: the recipe (its ``seed`` included).
        datasets: loaded training data sets by name.
        tests: loaded test sets by name.
        run_dir: the run's directory, ``RUNS_DIR/<key>``.
        key: the run key.
        tracker: MLflow tracker (``None``: no MLflow logging).
        run_name: MLflow run name (empty: the graph's name).
        tags: extra MLflow tags.
        epoch_hook: called after every committed epoch (see :func:`train_run`).
        verbose: Keras progress bar setting.
    """

    graph: GraphSpec
    recipe: Recipe
    datasets: dict[str, Dataset]
    tests: dict[str, Dataset]
    run_dir: Path
    key: str
    tracker: Tracker | None = None
    run_name: str = ""
    tags: dict[str, str] | None = None
    epoch_hook: EpochHook | None = None
    verbose: int | str = "auto"


def train_run(
    graph: GraphSpec,
    recipe: Recipe,
    datasets: dict[str, Dataset],
    tests: dict[str, Dataset],
    runs_dir: Path,
    *,
    tracker: Tracker | None = None,
    run_name: str = "",
    tags: dict[str, str] | None = None,
    epoch_hook: EpochHook | None = None,
    verbose: int | str = "auto",
    owner: Owner | None = None,
) -> RunResult:
    """Train ``graph`` with ``recipe`` on ``datasets`` (stages name them) and evaluate on ``tests``.

    Args:
        graph: a resolved graph spec (see :func:`crmlab.registry.validate.resolve_graph`).
        recipe: the recipe (its ``seed`` included).
        datasets: loaded training data sets by name.
        tests: loaded test sets by name.
        runs_dir: where run directories live.
        tracker: MLflow tracker (``None``: no MLflow logging).
        run_name: MLflow run name.
        tags: extra MLflow tags.
        epoch_hook: called after every epoch (once it is checkpointed) with (stage name, epoch, logs); may raise
            to stop the run (pruning, a budget); an exception with an ``mlflow_status`` attribute ends the MLflow
            run with that status (e.g. ``KILLED`` for a pruned trial), any other ends it ``FAILED``; one with a true
            ``drop_state`` attribute (a pruned trial, which never resumes) drops the run's state before the lock
            is released, so the same run started again trains from its first epoch.
        verbose: Keras progress bar setting.
        owner: the study that starts the run, recorded in the runs folder's manifest (``None``: not recorded).

    Returns:
        The :class:`~crmlab.runners.rundir._results.RunResult`; a run found finished in ``runs_dir`` is returned without
        training. With ``recipe.strategy: multi_worker`` every process returns the chief's result, and only the
        chief writes (:mod:`crmlab.runners.parallel._process_folders`).
    """
    join_processes(recipe.strategy)
    key = run_key(graph, recipe, data_hashes(datasets, tests))
    run_dir = Path(runs_dir) / key
    if is_chief():
        run_dir.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            record_run(Path(runs_dir), owner, key, data_hashes(datasets, tests).values())
    tracker = tracker if is_chief() else None
    with run_folder(run_dir) as folder:  # a second run of the key waits for it, then finds it finished
        ctx = RunContext(graph, recipe, datasets, tests, folder, key, tracker, run_name, tags, epoch_hook, verbose)
        result = _locked_run(ctx)
    return result if folder == run_dir else load_result(run_dir, key)


def _locked_run(ctx: RunContext) -> RunResult:
    state = CheckpointState(ctx.run_dir)
    if state["finished"]:
        if not keep_state():
            clean_finished(ctx.run_dir)  # after a kill during the clean-up
        return load_result(ctx.run_dir, ctx.key)
    if state["pruned"]:  # its state was dropped: it starts again from its first epoch
        state["pruned"] = False
        state.commit()

    with _op_determinism(ctx.recipe.deterministic):
        return _train_unfinished(ctx, state)


@contextmanager
def _op_determinism(on: bool) -> Iterator[None]:
    """TensorFlow op determinism while a ``recipe.deterministic`` run trains (nothing on other backends or runs).

    The switch is process-wide, so it is turned off again after the run unless it was on before: the runs a worker
    trains next train as they would in a fresh process."""
    if not on or keras.config.backend() != "tensorflow":
        yield
        return
    from tensorflow.python.framework import config  # the switch's state and its "off" have no public name

    before = config.is_op_determinism_enabled()
    config.enable_op_determinism()
    try:
        yield
    finally:
        if not before:
            config.disable_op_determinism()


def _train_unfinished(ctx: RunContext, state: CheckpointState) -> RunResult:
    """Seed, build (or reuse) the model, train the stages left, write the outputs and finish the run's state."""
    recipe, tracker = ctx.recipe, ctx.tracker
    seed_run(recipe.stream_seed)
    keras.config.set_dtype_policy(recipe.precision)
    compiled = training_model(ctx.graph, recipe)
    model, dist = compiled.model, compiled.dist
    counts = parameter_counts(model)
    devices = record_devices(state, recipe, dist.replicas)
    slot = current_slot()
    if slot is not None:  # a worker process (--jobs, --workers): what it was given and what it sees
        seen = ",".join(record_placement(ctx.run_dir, slot)["devices"])
        placed = {"crmlab.placement": slot.describe(), "crmlab.placement.devices": seen}
        ctx = dataclasses.replace(ctx, tags={**(ctx.tags or {}), **placed})

    if tracker is not None:
        _start_tracking(ctx, tracker, state, dist, counts, devices)
    try:
        result = _train_stages(ctx, compiled, state)
    except BaseException as exc:
        if tracker is not None:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            tracker.end(getattr(exc, "mlflow_status", status))
        if getattr(exc, "drop_state", False):
            drop_state(state)
        raise
    result.parameters = counts
    result.run_key, result.run_dir, result.mlflow_run_id = ctx.key, ctx.run_dir, state["mlflow_run_id"]
    write_outputs(result, ctx.graph, recipe, tracker)
    keep = keep_state()
    state["finished"] = True
    if not keep:
        state["checkpoint"] = None
    state.commit()
    if tracker is not None:
        tracker.end("FINISHED")
    if not keep:
        clean_finished(ctx.run_dir)
    return result


def _start_tracking(
    ctx: RunContext,
    tracker: Tracker,
    state: CheckpointState,
    dist: Distribution,
    counts: dict[str, int],
    devices: dict[str, str],
) -> None:
    """Start (or resume) the run's MLflow run, record its id in ``state``, log parameters and pending epochs."""
    graph = ctx.graph
    all_tags = {
        "crmlab.run_key": ctx.key,
        "crmlab.spec_hash": digest(graph.to_dict()),
        "crmlab.data_hash": digest({k: d.content_hash for k, d in ctx.datasets.items()}),
        "crmlab.version": _version(),
        "crmlab.backend": keras.config.backend(),
        "crmlab.strategy": dist.name,
        **devices,
        **(ctx.tags or {}),
    }
    commit = git_commit(Path(__file__).parent)
    if commit:
        all_tags["mlflow.source.git.commit"] = commit
    all_tags["crmlab.run_dir"] = str(ctx.run_dir.resolve())
    # a kill between creating the MLflow run and committing its id leaves an unfinished run with these tags
    mine = {"crmlab.run_key": ctx.key, "crmlab.run_dir": all_tags["crmlab.run_dir"]}
    run_id = state["mlflow_run_id"] or tracker.unfinished_run(mine)
    state["mlflow_run_id"] = tracker.start(ctx.run_name or graph.name, all_tags, run_id)
    state.commit()
    if run_id is None:  # a new MLflow run: the data it trains, validates and tests on, as its inputs
        tracker.log_datasets(_inputs(ctx))
    tracker.log_params(flatten({"graph": graph.to_dict(), "recipe": ctx.recipe.model_dump(mode="json")}))
    tracker.log_params({"parameters.total": counts["total"], "parameters.trainable": counts["trainable"]})
    log_pending(state, tracker)


def _inputs(ctx: RunContext) -> list[tuple[str, str, int, str]]:
    """``(name, content hash, rows, context)`` of the stages' training and validation sets and the test sets."""
    used: dict[str, str] = {}
    for stage in ctx.recipe.stages:
        used.setdefault(stage.data, "training")
        if stage.split.validation:
            used.setdefault(stage.split.validation, "validation")
    found = [(name, ctx.datasets[name], context) for name, context in used.items()]
    found += [(name, ds, "test") for name, ds in ctx.tests.items()]
    return [(name, ds.content_hash, len(ds), context) for name, ds, context in found]


def _train_stages(ctx: RunContext, compiled: TrainingModel, state: CheckpointState) -> RunResult:
    """Train the stages not yet finished (from the checkpoint or the stage cache), then export and evaluate."""
    recipe, model, dist = ctx.recipe, compiled.model, compiled.dist
    resumed = checkpoint_file(state, WEIGHTS)
    if resumed is not None:
        load_variables(model, resumed)
    keys = stage_keys(ctx.graph, recipe, ctx.datasets, dist.replicas)
    state["stage_keys"] = keys  # committed with the next checkpoint; names the stage caches this run may load
    cache_root = state.run_dir.parent / "_stages"
    for index, stage in enumerate(recipe.stages):
        if index < state["stage"]:
            continue
        cached = cache_root / keys[index]
        if state["epoch"] == 0 and (cached / "stage.json").exists():
            load_stage(cached, model, state, stage.name)
            state["stage"] = index + 1
            state.checkpoint(model, None, best_improved=True)
            continue
        _train_stage(ctx, compiled, state, index, stage)
        state["stage"], state["epoch"], state["best"], state["wait"] = index + 1, 0, None, 0
        state.checkpoint(model, None, best_improved=True)
        (state.run_dir / f"stage{index}-start.npz").unlink(missing_ok=True)  # mixed in; the stage is committed
        if index < len(recipe.stages) - 1:
            store_stage(cached, model, state, stage.name)
    return _export_and_evaluate(ctx, compiled, state)


def _train_stage(ctx: RunContext, compiled: TrainingModel, state: CheckpointState, index: int, stage: Stage) -> None:
    """Train ``stage`` (index ``index``) from its first or its checkpointed epoch to its end (or early stop); leave
    the model with the stage's final weights (best restored, start weights mixed back in)."""
    recipe, model, dist = ctx.recipe, compiled.model, compiled.dist
    train, val = stage_split(ctx.datasets[stage.data], stage, ctx.datasets, recipe.seed)
    mean, std = (float(train.values.mean()), float(train.values.std() or 1.0)) if stage.standardize else (0.0, 1.0)
    state["norm"][stage.name] = [mean, std]
    batch = (stage.batch_size or recipe.batch_size) * dist.replicas
    train_y = (train.values - mean) / std
    part = (process_index(), process_count())  # each process feeds its slice of every batch
    batches = Batches(train.tokens, train_y, batch, recipe.seed, recipe.reverse_complement, part)
    keep = local_rows(len(val) - len(val) % dist.replicas)  # whole batches, split evenly across replicas
    val_y = ((val.values[keep] - mean) / std).astype("float32").reshape(-1, 1)
    val_batch = max(batch, 256 * dist.replicas) // process_count()
    val_xy = InOrder(val.tokens, val_y, val_batch, keep)
    row = (train.tokens[:1].astype("int32"), train_y[:1].astype("float32").reshape(-1, 1))
    compiled.start_stage(recipe, stage, len(batches), *row)
    start = state.run_dir / f"stage{index}-start.npz"
    if stage.keep_previous and state["epoch"] == 0:
        save_stage_start(model, start)
    opt_file = state.file("optimizer.npz")
    if state["epoch"] > 0 and opt_file is not None:
        with dist.scope():
            load_optimizer(model.optimizer, model, opt_file)
    else:
        state["best"], state["wait"] = None, 0
    epochs = recipe.stage_epochs(stage)
    control = EpochControl(stage, recipe, batches, state, ctx.tracker, ctx.epoch_hook, index)
    if state["epoch"] < epochs and state["wait"] < recipe.stage_early_stopping(stage).patience:
        model.fit(
            batches,
            validation_data=val_xy,
            epochs=epochs,
            shuffle=False,  # Batches fixes a seeded per-epoch order; Keras must not reorder it
            initial_epoch=state["epoch"],
            callbacks=[control],
            verbose=ctx.verbose,
        )
    best = checkpoint_file(state, BEST)
    if recipe.stage_early_stopping(stage).restore_best and best is not None:
        load_variables(model, best)
    if stage.keep_previous:
        keep_previous(model, start, stage.keep_previous)


def _export_and_evaluate(ctx: RunContext, compiled: TrainingModel, state: CheckpointState) -> RunResult:
    """Export the trained model (strand averaging, target scale), evaluate it on the test sets and the last stage's
    validation split, and save it and its step timing in the run directory.

    Predictions come from the kept export head (its predict step is traced once per graph), on the target scale by
    the same ``x * std + mean`` in float32 that the saved model's ``target_scale`` layer computes."""
    recipe, dist = ctx.recipe, compiled.dist
    mean, std = state["norm"][recipe.stages[-1].name]
    head = compiled.export_head(recipe.average_reverse_complement)
    scale = keras.layers.Rescaling(std, mean, name="target_scale")
    exported = keras.Model(head.inputs, scale(head.outputs[0]))
    metrics, predictions = {}, {}
    for name, ds in ctx.tests.items():
        pred = predict(head, ds.tokens, dist.replicas) * np.float32(std) + np.float32(mean)
        predictions[name] = pred
        metrics[name] = regression_metrics(ds.values, pred)
    steps = state["step_seconds"][1:] or state["step_seconds"]
    measured = {name: ds.values for name, ds in ctx.tests.items()}
    result = RunResult("", state.run_dir, metrics, state["history"], {}, predictions=predictions, measured=measured)
    result.validation = final_validation(head, recipe, ctx.datasets, (mean, std), dist.replicas)
    result.model_path = state.run_dir / "model.keras"
    exported.save(result.model_path)
    (state.run_dir / "timing.json").write_text(
        json.dumps({"seconds_per_step": float(np.median(steps)) if steps else None})
    )
    return result


def _version() -> str:
    try:
        return metadata.version("crmlab")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"
