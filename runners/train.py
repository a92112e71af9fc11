"""The single training path: spec + recipe + data + seed -> trained model + test metrics (+ MLflow run).

Ablation variants and search trials all come through :func:`train_run`. A run lives in
``RUNS_DIR/<run key>/``, the key being a hash of (resolved spec, recipe, data, seed); after every epoch it commits a
checkpoint (weights, optimiser state, early-stopping state, history) by atomically replacing ``state.json``, so a
run killed at any point resumes from its last completed epoch with the same command, in the same MLflow run.

Determinism: Python, NumPy and backend seeds are set from ``recipe.seed``, data splits and batch order depend on the
seed alone. Weight initialisation is reproducible; kernels of the backend on CPU/GPU (and dropout after a resume)
are not bit-reproducible unless ``recipe.deterministic`` (TensorFlow op determinism; slower).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from crmlab.blocks.assemble import assemble, parameter_counts, reverse_complement_average
from crmlab.registry import yamlio
from crmlab.registry.errors import CrmlabError
from crmlab.registry.spec import GraphSpec
from crmlab.runners import data as data_mod
from crmlab.runners.distribute import Distribution, make_distribution
from crmlab.runners.metrics import PearsonR, regression_metrics
from crmlab.runners.pipeline import Batches
from crmlab.runners.recipe import Recipe, Schedule, Stage
from crmlab.runners.tracking import Tracker, flatten, git_commit

STATE_VERSION = 1
EpochHook = Callable[[str, int, dict[str, float]], None]


class TrainingFailed(CrmlabError):
    """A run that cannot go on (NaN loss, diverged): the reason is the message."""


@dataclass
class RunResult:
    """What a finished run produced."""

    run_key: str
    run_dir: Path
    test_metrics: dict[str, dict[str, float]]
    history: list[dict[str, Any]]
    parameters: dict[str, int]
    mlflow_run_id: str | None = None
    model_path: Path | None = None
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    measured: dict[str, np.ndarray] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)


def digest(*parts: Any) -> str:
    """Stable short hash of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_key(graph: GraphSpec, recipe: Recipe, data_hashes: dict[str, str]) -> str:
    return digest(graph.to_dict(), recipe.model_dump(mode="json"), data_hashes)


def run_history(
    graph: GraphSpec,
    recipe: Recipe,
    datasets: dict[str, data_mod.Dataset],
    tests: dict[str, data_mod.Dataset],
    runs_dir: Path,
) -> list[dict[str, Any]]:
    """The per-epoch records this exact run has committed in ``runs_dir`` so far (empty if it never started)."""
    state = Path(runs_dir) / run_key(graph, recipe, _hashes(datasets, tests)) / "state.json"
    return json.loads(state.read_text()).get("history", []) if state.exists() else []


def _hashes(datasets: dict[str, data_mod.Dataset], tests: dict[str, data_mod.Dataset]) -> dict[str, str]:
    return {k: d.content_hash for k, d in sorted({**datasets, **tests}.items())}


def finished_result(
    graph: GraphSpec,
    recipe: Recipe,
    datasets: dict[str, data_mod.Dataset],
    tests: dict[str, data_mod.Dataset],
    runs_dir: Path,
) -> RunResult | None:
    """The result of this exact run if it has finished in ``runs_dir``, else ``None`` (nothing is trained)."""
    key = run_key(graph, recipe, _hashes(datasets, tests))
    state = Path(runs_dir) / key / "state.json"
    if state.exists() and json.loads(state.read_text()).get("finished"):
        return _load_result(state.parent, key)
    return None


@keras.saving.register_keras_serializable(package="crmlab")
class StageSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A recipe :class:`~crmlab.runners.recipe.Schedule` evaluated per optimiser step (``keras.ops`` only)."""

    def __init__(self, schedule: dict[str, Any], steps_per_epoch: int, epochs: int, scale: float = 1.0) -> None:
        self.schedule, self.steps_per_epoch, self.epochs, self.scale = schedule, steps_per_epoch, epochs, scale

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        s = Schedule(**self.schedule)
        epoch = ops.cast(step, "float32") / float(self.steps_per_epoch)
        if s.kind == "constant":
            return ops.convert_to_tensor(s.peak * self.scale, "float32")
        warm = s.initial + (s.peak - s.initial) * epoch / max(s.warmup_epochs, 1e-9)
        if s.kind == "flat":
            after = ops.convert_to_tensor(s.peak, "float32") + 0.0 * epoch
        else:
            span = float(max(self.epochs - s.warmup_epochs, 1))
            t = ops.clip((epoch - s.warmup_epochs) / span, 0.0, 1.0)
            after = s.final + 0.5 * (s.peak - s.final) * (1.0 + ops.cos(math.pi * t))
        rate = ops.where(epoch < s.warmup_epochs, warm, after) if s.warmup_epochs > 0 else after
        return rate * self.scale

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "scale": self.scale,
        }


class _State:
    """The run's committed progress (``state.json``) and its checkpoint directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "state.json"
        self.data: dict[str, Any] = {
            "version": STATE_VERSION,
            "stage": 0,
            "epoch": 0,
            "best": None,
            "wait": 0,
            "history": [],
            "norm": {},
            "checkpoint": None,
            "mlflow_run_id": None,
            "finished": False,
            "step_seconds": [],
            "logged": 0,
        }
        if self.path.exists():
            self.data.update(json.loads(self.path.read_text()))

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def commit(self) -> None:
        """Atomically replace ``state.json`` (the commit point of every checkpoint)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)

    def checkpoint(self, model: keras.Model, optimizer: Any, best_improved: bool) -> None:
        """Write weights, optimiser state and best weights to a new directory, then commit the state to it."""
        old = self.data["checkpoint"]
        n = int(old.rsplit("-", 1)[1]) + 1 if old else 0
        new = self.run_dir / f"ckpt-{n}"
        if new.exists():
            shutil.rmtree(new)
        new.mkdir(parents=True)
        model.save_weights(new / "weights.weights.h5")
        if optimizer is not None and optimizer.built:
            np.savez(new / "optimizer.npz", *[keras.ops.convert_to_numpy(v) for v in optimizer.variables])
        if best_improved:
            model.save_weights(new / "best.weights.h5")
        elif old and (self.run_dir / old / "best.weights.h5").exists():
            os.link(self.run_dir / old / "best.weights.h5", new / "best.weights.h5")
        self.data["checkpoint"] = new.name
        self.commit()
        if old and (self.run_dir / old).exists():
            shutil.rmtree(self.run_dir / old)

    def file(self, name: str) -> Path | None:
        ckpt = self.data["checkpoint"]
        path = self.run_dir / ckpt / name if ckpt else None
        return path if path is not None and path.exists() else None


def reseed_dropout(model: keras.Model, seed: int, stage: int, epoch: int) -> None:
    """Set every random-number state of ``model`` (dropout's seed generators) from ``(seed, stage, epoch)``.

    These states are not part of the saved weights, so without this a run resumed from a checkpoint, or one that
    loads a cached stage, would draw other dropout masks than a run trained in one go.
    """
    states = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    for i, v in enumerate(states):
        v.assign(np.array([int(digest(seed, stage, epoch, i)[:7], 16), 0]).astype(v.dtype))


class _EpochControl(keras.callbacks.Callback):
    """Per epoch: batch order, dropout seeds, NaN check, resumable early stopping, checkpoint, MLflow metrics, user
    hook."""

    def __init__(
        self,
        stage: Stage,
        recipe: Recipe,
        batches: Batches,
        state: _State,
        tracker: Tracker | None,
        hook: EpochHook | None,
        index: int = 0,
    ) -> None:
        super().__init__()
        self.stage, self.batches, self.state, self.tracker, self.hook = stage, batches, state, tracker, hook
        self.es = recipe.stage_early_stopping(stage)
        self.seed, self.index = recipe.seed, index
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.batches.epoch = epoch
        reseed_dropout(self.model, self.seed, self.index, epoch)
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        seconds = time.perf_counter() - self.started
        for key in ("loss", "val_loss"):
            if key in logs and not math.isfinite(logs[key]):
                raise TrainingFailed(f"{self.stage.name}: {key} is {logs[key]} at epoch {epoch + 1} (diverged)")
        if not all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in self.model.trainable_weights):
            raise TrainingFailed(
                f"{self.stage.name}: weights are not finite after epoch {epoch + 1} (exploding gradients; "
                "lower the learning rate or set recipe.clipnorm)"
            )
        value = logs.get(self.es.monitor)
        if value is None:
            raise TrainingFailed(f"early_stopping.monitor '{self.es.monitor}' was not logged (have {sorted(logs)})")
        best = self.state["best"]
        improved = best is None or (value > best if self.es.mode == "max" else value < best)
        if improved:
            self.state["best"], self.state["wait"] = value, 0
        else:
            self.state["wait"] += 1
            if self.state["wait"] >= self.es.patience:
                self.model.stop_training = True
        record = {"stage": self.stage.name, "epoch": epoch + 1, "seconds": seconds, "time": time.time(), **logs}
        self.state["history"].append(record)
        self.state["step_seconds"].append(seconds / max(len(self.batches), 1))
        self.state["epoch"] = epoch + 1
        self.state.checkpoint(self.model, self.model.optimizer, improved)
        log_pending(self.state, self.tracker)
        if self.hook is not None:
            self.hook(self.stage.name, epoch + 1, logs)


def stage_keys(graph: GraphSpec, recipe: Recipe, datasets: dict[str, data_mod.Dataset], replicas: int) -> list[str]:
    """One key per stage, chained: stage ``i``'s key covers the spec, seed, shared recipe fields, replicas and the
    configuration and data of stages ``0..i``. Runs whose keys agree have identical weights after that stage."""
    exclude = {"stages", "early_stopping", "schedule", "epochs", "average_reverse_complement"}
    shared = recipe.model_dump(mode="json", exclude=exclude)
    key = digest(graph.to_dict(), shared, replicas)
    keys = []
    for stage in recipe.stages:
        used = [stage.data] + ([stage.split.validation] if stage.split.validation else [])
        config = {
            "stage": stage.model_dump(mode="json"),
            "epochs": recipe.stage_epochs(stage),
            "schedule": recipe.stage_schedule(stage).model_dump(mode="json"),
            "early_stopping": recipe.stage_early_stopping(stage).model_dump(mode="json"),
            "data": [datasets[u].content_hash for u in used],
        }
        key = digest(key, config)
        keys.append(key)
    return keys


_METRIC_KEYS = ("loss", "val_loss", "r2", "val_r2", "pearson_r", "val_pearson_r", "mse", "val_mse")


def log_pending(state: _State, tracker: Tracker | None) -> None:
    """Send committed epochs not yet in MLflow (after a kill, the resumed run catches up first).

    Each point carries its epoch's own timestamp, so a point sent twice (a kill between sending and committing
    ``logged``) is the identical metric, which the tracking store keeps once.
    """
    if tracker is None:
        return
    history = state["history"]
    for step in range(state.data.get("logged", 0), len(history)):
        record = history[step]
        metrics = {k: record[k] for k in _METRIC_KEYS if k in record}
        scoped = {f"{record['stage']}.{k}": v for k, v in metrics.items()}
        tracker.log_metrics({**scoped, **metrics}, step=step + 1, timestamp=record.get("time"))
    if state.data.get("logged", 0) != len(history):
        state["logged"] = len(history)
        state.commit()


def _split(ds: data_mod.Dataset, stage: Stage, datasets: dict[str, data_mod.Dataset], seed: int) -> tuple[Any, Any]:
    if stage.split.method == "files":
        return ds, datasets[str(stage.split.validation)]
    frac = stage.split.validation_fraction
    train_idx, val_idx = data_mod.split(ds, stage.split.method, (1 - frac, frac), seed)
    return ds.subset(train_idx), ds.subset(val_idx)


def loss_function(recipe: Recipe) -> keras.losses.Loss:
    """The recipe's training loss (Huber with its ``delta``, or mean squared error)."""
    if recipe.loss.name == "huber":
        return keras.losses.Huber(delta=recipe.loss.delta)
    return keras.losses.MeanSquaredError()


def compile_for_training(model: keras.Model, recipe: Recipe, stage: Stage, steps: int, dist: Distribution) -> Any:
    """Compile ``model`` for ``stage`` of ``recipe`` (loss, optimiser, per-step schedule, metrics, XLA); returns the
    optimiser. ``steps`` is the number of steps per epoch."""
    scale = dist.replicas if recipe.lr_scaling == "linear" else 1
    lr = StageSchedule(recipe.stage_schedule(stage).model_dump(), steps, recipe.stage_epochs(stage), scale)
    kwargs: dict[str, Any] = {"learning_rate": lr}
    if recipe.clipnorm:
        kwargs["clipnorm"] = recipe.clipnorm
    if recipe.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(weight_decay=recipe.weight_decay, **kwargs)
    else:
        optimizer = keras.optimizers.Adam(**kwargs)
    model.compile(
        optimizer=optimizer,
        loss=loss_function(recipe),
        metrics=[keras.metrics.R2Score(name="r2"), PearsonR(), keras.metrics.MeanSquaredError(name="mse")],
        jit_compile=recipe.jit_compile,
    )
    return optimizer


def _load_optimizer(optimizer: Any, model: keras.Model, path: Path) -> None:
    optimizer.build(model.trainable_variables)
    with np.load(path) as saved:
        arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(arrays) != len(optimizer.variables):
        raise TrainingFailed(
            f"checkpoint {path} does not match the optimiser ({len(arrays)} vs {len(optimizer.variables)})"
        )
    for var, value in zip(optimizer.variables, arrays, strict=True):
        var.assign(value)


def train_run(
    graph: GraphSpec,
    recipe: Recipe,
    datasets: dict[str, data_mod.Dataset],
    tests: dict[str, data_mod.Dataset],
    runs_dir: Path,
    *,
    tracker: Tracker | None = None,
    run_name: str = "",
    tags: dict[str, str] | None = None,
    epoch_hook: EpochHook | None = None,
    verbose: int | str = "auto",
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
            run with that status (e.g. ``KILLED`` for a pruned trial), any other ends it ``FAILED``.
        verbose: Keras progress bar setting.

    Returns:
        The :class:`RunResult`; a run found finished in ``runs_dir`` is returned without training.
    """
    key = run_key(graph, recipe, _hashes(datasets, tests))
    run_dir = Path(runs_dir) / key
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process with the same run waits, then finds it finished
        return _locked_run(graph, recipe, datasets, tests, run_dir, key, tracker, run_name, tags, epoch_hook, verbose)


def _locked_run(
    graph: GraphSpec,
    recipe: Recipe,
    datasets: dict[str, data_mod.Dataset],
    tests: dict[str, data_mod.Dataset],
    run_dir: Path,
    key: str,
    tracker: Tracker | None,
    run_name: str,
    tags: dict[str, str] | None,
    epoch_hook: EpochHook | None,
    verbose: int | str,
) -> RunResult:
    state = _State(run_dir)
    if state["finished"]:
        return _load_result(run_dir, key)

    keras.utils.set_random_seed(recipe.seed)
    keras.config.set_dtype_policy(recipe.precision)
    if recipe.deterministic and keras.config.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    dist = make_distribution(recipe.strategy)
    with dist.scope():
        model = assemble(graph)
    counts = parameter_counts(model)

    if tracker is not None:
        all_tags = {
            "crmlab.run_key": key,
            "crmlab.spec_hash": digest(graph.to_dict()),
            "crmlab.data_hash": digest({k: d.content_hash for k, d in datasets.items()}),
            "crmlab.version": _version(),
            "crmlab.backend": keras.config.backend(),
            "crmlab.strategy": dist.name,
            "crmlab.devices": str(dist.replicas),
            **(tags or {}),
        }
        commit = git_commit(Path(__file__).parent)
        if commit:
            all_tags["mlflow.source.git.commit"] = commit
        all_tags["crmlab.run_dir"] = str(run_dir.resolve())
        # a kill between creating the MLflow run and committing its id leaves an unfinished run with these tags
        mine = {"crmlab.run_key": key, "crmlab.run_dir": all_tags["crmlab.run_dir"]}
        run_id = state["mlflow_run_id"] or tracker.unfinished_run(mine)
        state["mlflow_run_id"] = tracker.start(run_name or graph.name, all_tags, run_id)
        state.commit()
        tracker.log_params(flatten({"graph": graph.to_dict(), "recipe": recipe.model_dump(mode="json")}))
        tracker.log_params({"parameters.total": counts["total"], "parameters.trainable": counts["trainable"]})
        log_pending(state, tracker)
    try:
        result = _train_stages(graph, recipe, datasets, tests, model, dist, state, tracker, epoch_hook, verbose)
    except BaseException as exc:
        if tracker is not None:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            tracker.end(getattr(exc, "mlflow_status", status))
        raise
    result.parameters = counts
    result.run_key, result.run_dir, result.mlflow_run_id = key, run_dir, state["mlflow_run_id"]
    _write_outputs(result, graph, recipe, tracker)
    state["finished"] = True
    state.commit()
    if tracker is not None:
        tracker.end("FINISHED")
    return result


def _train_stages(
    graph: GraphSpec,
    recipe: Recipe,
    datasets: dict[str, data_mod.Dataset],
    tests: dict[str, data_mod.Dataset],
    model: keras.Model,
    dist: Distribution,
    state: _State,
    tracker: Tracker | None,
    epoch_hook: EpochHook | None,
    verbose: int | str,
) -> RunResult:
    resumed = state.file("weights.weights.h5")
    if resumed is not None:
        model.load_weights(resumed)
    keys = stage_keys(graph, recipe, datasets, dist.replicas)
    cache_root = state.run_dir.parent / "_stages"
    for index, stage in enumerate(recipe.stages):
        if index < state["stage"]:
            continue
        cached = cache_root / keys[index]
        if state["epoch"] == 0 and (cached / "stage.json").exists():
            model.load_weights(cached / "weights.weights.h5")
            saved = json.loads((cached / "stage.json").read_text())
            state["norm"][stage.name] = saved["norm"]
            state["history"].extend({**h, "reused": keys[index]} for h in saved["history"])
            state["stage"] = index + 1
            state.checkpoint(model, None, best_improved=True)
            continue
        train, val = _split(datasets[stage.data], stage, datasets, recipe.seed)
        mean, std = (float(train.values.mean()), float(train.values.std() or 1.0)) if stage.standardize else (0.0, 1.0)
        state["norm"][stage.name] = [mean, std]
        batch = (stage.batch_size or recipe.batch_size) * dist.replicas
        batches = Batches(train.tokens, (train.values - mean) / std, batch, recipe.seed, recipe.reverse_complement)
        keep = len(val) - len(val) % dist.replicas  # every validation batch must split evenly across replicas
        val_y = ((val.values[:keep] - mean) / std).astype("float32").reshape(-1, 1)
        val_xy = (val.tokens[:keep].astype("int32"), val_y)
        with dist.scope():
            optimizer = compile_for_training(model, recipe, stage, len(batches), dist)
        start = state.run_dir / f"stage{index}-start.npz"
        if stage.keep_previous and state["epoch"] == 0:
            _save_start(model, start)
        opt_file = state.file("optimizer.npz")
        if state["epoch"] > 0 and opt_file is not None:
            with dist.scope():
                _load_optimizer(optimizer, model, opt_file)
        else:
            state["best"], state["wait"] = None, 0
        epochs = recipe.stage_epochs(stage)
        control = _EpochControl(stage, recipe, batches, state, tracker, epoch_hook, index)
        if state["epoch"] < epochs and state["wait"] < recipe.stage_early_stopping(stage).patience:
            model.fit(
                batches,
                validation_data=val_xy,
                validation_batch_size=max(batch, 256 * dist.replicas),
                epochs=epochs,
                shuffle=False,  # Batches fixes a seeded per-epoch order; Keras must not reorder it
                initial_epoch=state["epoch"],
                callbacks=[control],
                verbose=verbose,
            )
        best = state.file("best.weights.h5")
        if recipe.stage_early_stopping(stage).restore_best and best is not None:
            model.load_weights(best)
        if stage.keep_previous:
            _keep_previous(model, start, stage.keep_previous)
        state["stage"], state["epoch"], state["best"], state["wait"] = index + 1, 0, None, 0
        state.checkpoint(model, None, best_improved=True)
        if index < len(recipe.stages) - 1:
            _store_stage(cached, model, state, stage.name)

    mean, std = state["norm"][recipe.stages[-1].name]
    head = reverse_complement_average(model) if recipe.average_reverse_complement else model
    exported = keras.Model(head.inputs, keras.layers.Rescaling(std, mean, name="target_scale")(head.outputs[0]))
    metrics, predictions = {}, {}
    for name, ds in tests.items():
        pred = predict(exported, ds.tokens, dist.replicas)
        predictions[name] = pred
        metrics[name] = regression_metrics(ds.values, pred)
    steps = state["step_seconds"][1:] or state["step_seconds"]
    measured = {name: ds.values for name, ds in tests.items()}
    result = RunResult("", state.run_dir, metrics, state["history"], {}, predictions=predictions, measured=measured)
    result.validation = final_validation(exported, recipe, datasets, (mean, std), dist.replicas)
    result.model_path = state.run_dir / "model.keras"
    exported.save(result.model_path)
    (state.run_dir / "timing.json").write_text(
        json.dumps({"seconds_per_step": float(np.median(steps)) if steps else None})
    )
    return result


def final_validation(
    exported: keras.Model,
    recipe: Recipe,
    datasets: dict[str, data_mod.Dataset],
    norm: tuple[float, float],
    replicas: int = 1,
) -> dict[str, float]:
    """The exported model's ``val_*`` metrics on the last stage's validation split, on that stage's standardised
    scale (as the per-epoch metrics are).

    They differ from the best epoch's when the model is not that epoch's weights: ``keep_previous`` mixing,
    strand averaging, or no ``restore_best``. ``val_loss`` is the recipe's loss without regularisation terms.
    """
    stage = recipe.stages[-1]
    _, val = _split(datasets[stage.data], stage, datasets, recipe.seed)
    mean, std = norm
    y = (val.values.astype("float64") - mean) / std
    p = (predict(exported, val.tokens, replicas).astype("float64") - mean) / std
    m = regression_metrics(y, p)
    loss = float(keras.ops.convert_to_numpy(loss_function(recipe)(y.reshape(-1, 1), p.reshape(-1, 1))))
    return {"val_pearson_r": m["pearson_r"], "val_r2": m["r2"], "val_mse": m["mse"], "val_loss": loss}


def _save_start(model: keras.Model, path: Path) -> None:
    """The weights a stage starts from, as ``.npz`` (atomic rename; no optimizer state)."""
    tmp = path.with_name(f"tmp-{path.name}")
    with open(tmp, "wb") as f:
        np.savez(f, *model.get_weights())
    os.replace(tmp, path)


def _keep_previous(model: keras.Model, start: Path, keep: float) -> None:
    """WiSE-FT: set ``model``'s weights to ``keep * start + (1 - keep) * current`` (floating-point variables; others,
    such as seed-generator states, keep their current value)."""
    with np.load(start) as saved:
        before = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    after = model.get_weights()
    model.set_weights(
        [
            keep * b + (1 - keep) * a if np.issubdtype(a.dtype, np.floating) else a
            for b, a in zip(before, after, strict=True)
        ]
    )


def predict(model: keras.Model, tokens: np.ndarray, replicas: int = 1, batch_size: int = 1024) -> np.ndarray:
    """Predictions ``(n,)`` for ``tokens`` ``(n, length)``; pads to a multiple of ``replicas`` (JAX data-parallel
    batches must split evenly across devices) and trims the padding off again."""
    x = tokens.astype("int32")
    pad = (-len(x)) % replicas
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    size = max(batch_size // replicas, 1) * replicas
    return model.predict(x, batch_size=size, verbose=0).reshape(-1)[: len(tokens)]


def _store_stage(target: Path, model: keras.Model, state: _State, name: str) -> None:
    """Keep a finished (non-final) stage's weights for other runs with the same stage key (atomic rename)."""
    if target.exists():
        return
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_weights(tmp / "weights.weights.h5")
    history = [h for h in state["history"] if h["stage"] == name and "reused" not in h]
    (tmp / "stage.json").write_text(json.dumps({"norm": state["norm"][name], "history": history}))
    try:
        os.rename(tmp, target)
    except OSError:  # another process stored the same stage first
        shutil.rmtree(tmp, ignore_errors=True)


def _write_outputs(result: RunResult, graph: GraphSpec, recipe: Recipe, tracker: Tracker | None) -> None:
    out = result.run_dir
    (out / "graph.yaml").write_text(yamlio.dumps(graph.to_dict()))
    (out / "recipe.yaml").write_text(yamlio.dumps(recipe.model_dump(mode="json")))
    for name, pred in result.predictions.items():
        np.save(out / f"predictions_{name}.npy", pred)
        np.save(out / f"measured_{name}.npy", result.measured[name])
    summary = {
        "run_key": result.run_key,
        "test_metrics": result.test_metrics,
        "parameters": result.parameters,
        "mlflow_run_id": result.mlflow_run_id,
        "validation": result.validation,
        "history": result.history,
    }
    (out / "result.json").write_text(json.dumps(summary, indent=1))
    if tracker is None:
        return
    timing = json.loads((out / "timing.json").read_text())
    final = {f"test.{t}.{k}": v for t, m in result.test_metrics.items() for k, v in m.items()}
    final.update({f"final.{k}": v for k, v in result.validation.items()})
    if timing["seconds_per_step"]:
        final["time_per_step_ms"] = 1000 * timing["seconds_per_step"]
    final["parameters"] = result.parameters["total"]
    tracker.log_metrics(final)
    for name in ("graph.yaml", "recipe.yaml", "result.json", "model.keras"):
        tracker.log_artifact(out / name)
    plots = _scatter_plots(result, out)
    for path in plots:
        tracker.log_artifact(path, "plots")
    for name in result.predictions:
        tracker.log_artifact(_predictions_tsv(result, name, out), "predictions")


def _predictions_tsv(result: RunResult, name: str, out: Path) -> Path:
    path = out / f"predictions_{name}.tsv"
    table = np.column_stack([result.measured[name], result.predictions[name]])
    np.savetxt(path, table, fmt="%.6g", delimiter="\t", header="measured\tpredicted", comments="")
    return path


def _scatter_plots(result: RunResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, pred in result.predictions.items():
        measured = result.measured[name]
        fig, ax = plt.subplots(figsize=(4.2, 4))
        ax.hexbin(measured, pred, gridsize=40, mincnt=1, cmap="viridis")
        r = result.test_metrics[name]["pearson_r"]
        ax.set(xlabel="measured expression", ylabel="predicted expression", title=f"{name}\nPearson r = {r:.3f}")
        fig.tight_layout()
        path = out / f"scatter_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _load_result(run_dir: Path, key: str) -> RunResult:
    summary = json.loads((run_dir / "result.json").read_text())
    preds = {p.stem.removeprefix("predictions_"): np.load(p) for p in run_dir.glob("predictions_*.npy")}
    measured = {p.stem.removeprefix("measured_"): np.load(p) for p in run_dir.glob("measured_*.npy")}
    return RunResult(
        key,
        run_dir,
        summary["test_metrics"],
        summary["history"],
        summary["parameters"],
        summary.get("mlflow_run_id"),
        run_dir / "model.keras",
        preds,
        measured,
        summary.get("validation", {}),
    )


def _version() -> str:
    from crmlab import __version__

    return __version__
