"""What happens at every epoch of a training stage: batch order and dropout seeds at its start; a finiteness check,
resumable early stopping, a checkpoint, MLflow metrics and the caller's hook at its end."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from crmlab.runners.rundir import CheckpointState, TrainingFailed, digest
from crmlab.runners.studyfile import Recipe, Stage
from crmlab.runners.tracking import Tracker
from crmlab.runners.training._batches import Batches

__all__ = ["EpochControl", "EpochHook", "log_pending", "reseed_dropout"]

EpochHook = Callable[[str, int, dict[str, float]], None]
"""Called after every committed epoch with (stage name, epoch, logs)."""

_METRIC_KEYS = ("loss", "val_loss", "r2", "val_r2", "pearson_r", "val_pearson_r", "mse", "val_mse")


def reseed_dropout(model: keras.Model, seed: int, stage: int, epoch: int) -> None:
    """Set every random-number state of ``model`` (dropout's seed generators) from ``(seed, stage, epoch)``.

    These states are not part of the saved weights, so without this a run resumed from a checkpoint, or one that
    loads a cached stage, would draw other dropout masks than a run trained in one go.
    """
    states = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    for i, v in enumerate(states):
        v.assign(np.array([int(digest(seed, stage, epoch, i)[:7], 16), 0]).astype(v.dtype))


class EpochControl(keras.callbacks.Callback):
    """Per epoch: batch order, dropout seeds, NaN check, resumable early stopping, checkpoint, MLflow metrics, user
    hook.

    Early stopping counts in ``state`` (``best``, ``wait``), so patience carries across a restart. At the end of an
    epoch that is finite, the epoch's record is appended to ``state["history"]`` and a checkpoint is committed
    before its metrics go to MLflow and the hook is called.

    Args:
        stage: the stage being trained.
        recipe: the recipe (early stopping for ``stage``, seed).
        batches: the stage's training batches (their ``epoch`` sets the batch order; ``len`` is steps per epoch).
        state: the run's checkpoint state.
        tracker: MLflow tracker (``None``: no MLflow logging).
        hook: called after each committed epoch (``None``: none).
        index: the stage's index in the recipe (for dropout seeds).

    Raises:
        TrainingFailed: at an epoch's end, a non-finite loss or weights, or an early-stopping monitor not logged.
    """

    def __init__(
        self,
        stage: Stage,
        recipe: Recipe,
        batches: Batches,
        state: CheckpointState,
        tracker: Tracker | None,
        hook: EpochHook | None,
        index: int = 0,
    ) -> None:
        super().__init__()
        self.stage, self.batches, self.state, self.tracker, self.hook = stage, batches, state, tracker, hook
        self.es = recipe.stage_early_stopping(stage)
        self.seed, self.index = recipe.stream_seed, index
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


def log_pending(state: CheckpointState, tracker: Tracker | None) -> None:
    """Send committed epochs not yet in MLflow (after a kill, the resumed run catches up first).

    Each epoch's metrics go once, as ``<stage>.<metric>`` at step = the epoch's number within its stage (1, 2, ...),
    so every run's fine-tuning curve starts at step 1 and shares one x-axis, whether it was pretrained or not. Each
    point carries its epoch's own timestamp, so a point sent twice (a kill between sending and committing
    ``logged``) is the identical metric, which the tracking store keeps once.
    """
    if tracker is None:
        return
    history = state["history"]
    for step in range(state.data.get("logged", 0), len(history)):
        record = history[step]
        metrics = {k: record[k] for k in _METRIC_KEYS if k in record}
        scoped = {f"{record['stage']}.{k}": v for k, v in metrics.items()}
        tracker.log_metrics(scoped, step=record["epoch"], timestamp=record.get("time"))
    if state.data.get("logged", 0) != len(history):
        state["logged"] = len(history)
        state.commit()
