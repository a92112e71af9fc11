"""A run's checkpoint on disk: its committed progress (``state.json``), weights and optimiser state per epoch, the
weights a stage starts from, and the cache of finished stages that other runs reuse.

Layout of a run directory ``RUNS_DIR/<run key>/``: ``state.json`` names the current ``ckpt-<n>/`` folder (holding
``weights.npz``, ``optimizer.npz`` and ``best.npz``); replacing ``state.json`` atomically is the
commit point, so a run killed at any moment finds a complete checkpoint. ``stage<i>-start.npz`` keeps the weights
stage ``i`` started from (for ``keep_previous``), until that stage is committed. Finished stages are cached in
``RUNS_DIR/_stages/<stage key>/`` (``weights.npz``, weights only: every stage starts with a fresh optimiser, and
``stage.json`` with the stage's normalisation and history); caches written before as ``weights.weights.h5`` still
load. A finished run's checkpoints are deleted (:mod:`crmlab.runners.rundir._retention`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np

from crmlab.runners.rundir._results import TrainingFailed

__all__ = [
    "BEST",
    "LEGACY",
    "STAGE_WEIGHTS",
    "STATE_VERSION",
    "WEIGHTS",
    "CheckpointState",
    "checkpoint_file",
    "keep_previous",
    "load_optimizer",
    "load_stage",
    "load_variables",
    "optimizer_state",
    "save_stage_start",
    "save_variables",
    "store_stage",
]

STATE_VERSION = 1
SCHEDULE_VARIABLE = "stage_schedule"
"""The optimiser variable that holds the stage schedule (:mod:`crmlab.runners.training._schedule`); checkpoints leave it
out, since each stage sets it afresh."""
WEIGHTS = "weights.npz"
"""A checkpoint's current weights (:func:`save_variables`)."""
BEST = "best.npz"
"""A checkpoint's best weights so far (early stopping restores them)."""
LEGACY = {WEIGHTS: "weights.weights.h5", BEST: "best.weights.h5"}
"""The Keras weight files that checkpoints held before the ``.npz`` files; a run resumed from one still loads it."""
STAGE_WEIGHTS = "weights.npz"
"""A stage cache's weights (:func:`save_variables`; no optimiser state)."""
_LEGACY_STAGE = "weights.weights.h5"


def _fresh() -> dict[str, Any]:
    return {
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
        "pruned": False,
        "step_seconds": [],
        "logged": 0,
        "stage_keys": [],
        "devices": None,
        "processes": None,
        "global_batch": {},
        "dropped_history": [],
    }


class CheckpointState:
    """The run's committed progress (``state.json``) and its checkpoint directory.

    Read and set fields by key (``state["epoch"]``); :meth:`commit` writes them. The fields: ``version``,
    ``stage`` (stages finished), ``epoch`` (epochs finished in the current stage), ``best`` and ``wait`` (early
    stopping), ``history`` (one record per epoch), ``norm`` (``[mean, std]`` of the targets by stage name),
    ``checkpoint`` (the current ``ckpt-<n>`` folder), ``mlflow_run_id``, ``finished``, ``pruned`` (its state was
    dropped, see :func:`crmlab.runners.rundir._retention.drop_state`), ``step_seconds`` (seconds per step, by epoch),
    ``logged`` (history records sent to MLflow), ``stage_keys`` (the run's stage keys, which name the stage
    caches it may load), ``devices`` (the data-parallel replicas it trains on, over all its processes; the
    global batch is the recipe's batch times this), ``processes`` (1, or the processes of a multi-process run),
    ``global_batch`` (by stage name) and ``dropped_history`` (the epochs of attempts whose state was dropped: a
    pruned trial's, kept so the epochs a search trained can still be counted).

    Args:
        run_dir: the run's directory; an existing ``state.json`` there is loaded.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "state.json"
        self.data: dict[str, Any] = _fresh()
        if self.path.exists():
            self.data.update(json.loads(self.path.read_text()))

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def reset(self, **fields: Any) -> None:
        """Forget all progress (not committed until :meth:`commit`); ``fields`` set some fields of the fresh state."""
        self.data = {**_fresh(), **fields}

    def commit(self) -> None:
        """Atomically replace ``state.json`` (the commit point of every checkpoint)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)

    def checkpoint(self, model: keras.Model, optimizer: Any, best_improved: bool) -> None:
        """Write weights, optimiser state and best weights to a new directory, then commit the state to it (the
        previous checkpoint is removed: one rolling checkpoint; an unchanged best file is a hard link, not a copy).

        Args:
            model: the model whose weights to keep.
            optimizer: its optimiser (``None``, or not built: no optimiser state is kept).
            best_improved: this epoch is the best so far (else the previous best weights are kept).
        """
        old = self.data["checkpoint"]
        n = int(old.rsplit("-", 1)[1]) + 1 if old else 0
        new = self.run_dir / f"ckpt-{n}"
        if new.exists():
            shutil.rmtree(new)
        new.mkdir(parents=True)
        save_variables(model, new / WEIGHTS)
        if optimizer is not None and optimizer.built:
            np.savez(new / "optimizer.npz", *[keras.ops.convert_to_numpy(v) for v in optimizer_state(optimizer)])
        if best_improved:
            os.link(new / WEIGHTS, new / BEST)
        elif old and (self.run_dir / old / BEST).exists():
            os.link(self.run_dir / old / BEST, new / BEST)
        self.data["checkpoint"] = new.name
        self.commit()
        if old and (self.run_dir / old).exists():
            shutil.rmtree(self.run_dir / old)

    def file(self, name: str) -> Path | None:
        """The file ``name`` of the committed checkpoint (``None`` when there is none or it lacks the file)."""
        ckpt = self.data["checkpoint"]
        path = self.run_dir / ckpt / name if ckpt else None
        return path if path is not None and path.exists() else None


def _arrays(path: Path) -> list[np.ndarray]:
    """The arrays of an ``.npz`` written by ``np.savez(path, *arrays)``, in order."""
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def save_variables(model: keras.Model, path: Path) -> None:
    """Every variable of ``model`` (weights and dropout seed states) to ``path`` as ``.npz``.

    A plain array file: writing the quarter-width CRMnet's weights through Keras' ``.weights.h5`` walked every layer
    and took about 2 s per checkpoint on a 2-core CPU, every epoch; this takes milliseconds.
    """
    np.savez(path, *[keras.ops.convert_to_numpy(v) for v in model.variables])


def load_variables(model: keras.Model, path: Path) -> None:
    """Set ``model``'s variables from :func:`save_variables`' file; a Keras ``.weights.h5`` file (checkpoints
    written before the ``.npz`` format) is loaded by Keras."""
    if path.name.endswith(".weights.h5"):
        model.load_weights(path)
        return
    for variable, value in zip(model.variables, _arrays(path), strict=True):
        variable.assign(value)


def checkpoint_file(state: CheckpointState, name: str) -> Path | None:
    """The committed checkpoint's ``WEIGHTS`` or ``BEST`` file, or the ``.weights.h5`` file an older checkpoint
    holds instead (``None`` if neither)."""
    return state.file(name) or state.file(LEGACY[name])


def load_optimizer(optimizer: Any, model: keras.Model, path: Path) -> None:
    """Build ``optimizer`` for ``model`` and set its variables from a checkpoint's ``optimizer.npz``.

    Raises:
        TrainingFailed: the file holds another number of variables than the optimiser.
    """
    optimizer.build(model.trainable_variables)
    arrays = _arrays(path)
    variables = optimizer_state(optimizer)
    if len(arrays) != len(variables):
        raise TrainingFailed(f"checkpoint {path} does not match the optimiser ({len(arrays)} vs {len(variables)})")
    for var, value in zip(variables, arrays, strict=True):
        var.assign(value)


def optimizer_state(optimizer: Any) -> list[Any]:
    """The optimiser's training state: its variables except the stage's schedule (which the stage sets)."""
    return [v for v in optimizer.variables if v.name != SCHEDULE_VARIABLE]


def save_stage_start(model: keras.Model, path: Path) -> None:
    """The weights a stage starts from, as ``.npz`` (atomic rename; no optimizer state)."""
    tmp = path.with_name(f"tmp-{path.name}")
    with open(tmp, "wb") as f:
        np.savez(f, *model.get_weights())
    os.replace(tmp, path)


def keep_previous(model: keras.Model, start: Path, keep: float) -> None:
    """WiSE-FT: set ``model``'s weights to ``keep * start + (1 - keep) * current`` (floating-point variables; others,
    such as seed-generator states, keep their current value).

    Args:
        model: the model at the end of its stage.
        start: the stage's start weights (see :func:`save_stage_start`).
        keep: the weight of the start weights, in ``[0, 1]``.
    """
    before = _arrays(start)
    after = model.get_weights()
    model.set_weights(
        [
            keep * b + (1 - keep) * a if np.issubdtype(a.dtype, np.floating) else a
            for b, a in zip(before, after, strict=True)
        ]
    )


def store_stage(target: Path, model: keras.Model, state: CheckpointState, name: str) -> None:
    """Keep a finished (non-final) stage's weights for other runs with the same stage key (atomic rename).

    Args:
        target: the stage's cache folder, ``_stages/<stage key>``.
        model: the model at the end of the stage.
        state: the run's state (the stage's normalisation and its own, not reused, history are kept).
        name: the stage's name.
    """
    if target.exists():
        return
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_variables(model, tmp / STAGE_WEIGHTS)
    history = [h for h in state["history"] if h["stage"] == name and "reused" not in h]
    (tmp / "stage.json").write_text(json.dumps({"norm": state["norm"][name], "history": history}))
    try:
        os.rename(tmp, target)
    except OSError:  # another process stored the same stage first
        shutil.rmtree(tmp, ignore_errors=True)


def load_stage(source: Path, model: keras.Model, state: CheckpointState, name: str) -> None:
    """Take a cached stage (see :func:`store_stage`): load its weights into ``model``, and its normalisation and
    history into ``state``, each history record marked ``reused`` with the stage key (``source``'s name); a cache
    written as a Keras ``.weights.h5`` file still loads."""
    weights = source / STAGE_WEIGHTS
    load_variables(model, weights if weights.exists() else source / _LEGACY_STAGE)
    saved = json.loads((source / "stage.json").read_text())
    state["norm"][name] = saved["norm"]
    state["history"].extend({**h, "reused": source.name} for h in saved["history"])
