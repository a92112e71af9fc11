"""Multi-process data parallelism on JAX (``recipe.strategy: multi_worker``): joining the processes, which one
writes, each process's part of a batch, and predictions gathered from all of them.

Every process runs the same command (``crmlab train STUDY --backend jax --set recipe.strategy=multi_worker``) with
Keras' environment variables: :data:`ADDRESSES` (the coordinator's ``host:port``, or a comma list of every
process's address, the coordinator first), :data:`NUM_PROCESSES` and :data:`PROCESS_ID` (``0`` .. ``N-1``).
:func:`join_processes` hands them to ``keras.distribution.initialize`` (``jax.distributed.initialize``; gloo
collectives between CPU devices) before JAX first uses a device; the model then trains under
``keras.distribution.DataParallel`` over every process's devices, each process feeding its slice of every global
batch.

Process 0, the chief, is the only one that writes: it takes the run's lock and writes the run folder, checkpoints,
outputs and the MLflow run. The others take no lock and write nothing in the runs folder: each trains in a private
scratch copy of the chief's run folder (taken while the chief holds the lock, so a resumed run starts from the
chief's checkpoint: the runs folder must be one shared file system), and returns the chief's result once the chief
has written it. None of this enters the run key: the process count and the coordinator are environment, not recipe.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from crmlab.registry.errors import CrmlabError, SpecError
from crmlab.runners.checkpoint import CheckpointState
from crmlab.runners.recipe import Recipe
from crmlab.runners.retention import LOCK, run_lock

__all__ = [
    "ADDRESSES",
    "ALLOW_DEVICE_CHANGE",
    "NUM_PROCESSES",
    "PROCESS_ID",
    "barrier",
    "is_chief",
    "join_processes",
    "local_rows",
    "predict_across",
    "process_count",
    "process_index",
    "record_devices",
    "run_folder",
]

ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
"""The coordinator's ``host:port`` (or every process's, comma-separated, the coordinator first)."""
NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
"""How many processes train the run."""
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
"""This process's index, ``0`` (the chief) to ``NUM_PROCESSES - 1``."""
ALLOW_DEVICE_CHANGE = "CRMLAB_ALLOW_DEVICE_CHANGE"
"""Set to 1 to resume a run on another device count than it started on (its global batch then changes)."""


def _settings() -> tuple[str, int, int]:
    """The job addresses, process count and this process's index from Keras' environment variables."""
    names = (ADDRESSES, NUM_PROCESSES, PROCESS_ID)
    missing = [name for name in names if not os.environ.get(name, "").strip()]
    if missing:
        raise SpecError(
            "",
            "recipe.strategy",
            f"multi_worker: set {', '.join(missing)} in every process ({ADDRESSES}: the coordinator's host:port; "
            f"{NUM_PROCESSES}: the process count; {PROCESS_ID}: 0 for the chief, up to the count - 1)",
        )
    addresses = [a.strip() for a in os.environ[ADDRESSES].split(",") if a.strip()]
    try:
        count, index = int(os.environ[NUM_PROCESSES]), int(os.environ[PROCESS_ID])
    except ValueError:
        given = f"{os.environ[NUM_PROCESSES]!r} and {os.environ[PROCESS_ID]!r}"
        raise SpecError(
            "", "recipe.strategy", f"multi_worker: {NUM_PROCESSES} and {PROCESS_ID} must be whole numbers, got {given}"
        ) from None
    if count < 1 or not 0 <= index < count:
        raise SpecError("", "recipe.strategy", f"multi_worker: {PROCESS_ID}={index} is not in 0..{count - 1}")
    if len(addresses) > 1 and len(addresses) != count:
        raise SpecError(
            "", "recipe.strategy", f"multi_worker: {ADDRESSES} lists {len(addresses)} addresses for {count} processes"
        )
    if not all(a.rpartition(":")[2].isdigit() for a in addresses):
        given = os.environ[ADDRESSES]
        raise SpecError("", "recipe.strategy", f"multi_worker: {ADDRESSES} needs host:port, got {given!r}")
    return ",".join(addresses), count, index


def _joined() -> bool:
    if keras.config.backend() != "jax":
        return False
    import jax

    return bool(jax.distributed.is_initialized())


def join_processes(strategy: str) -> None:
    """Join the run's processes (``jax.distributed`` through ``keras.distribution.initialize``) when ``strategy`` is
    ``multi_worker`` on JAX; nothing otherwise, or when they are joined already.

    Call it before JAX first uses a device (before a model is built): ``crmlab train`` does, as soon as it has read
    the recipe.

    Raises:
        SpecError: the environment variables are missing or inconsistent.
        CrmlabError: JAX has already initialised its devices, or the processes could not join.
    """
    if strategy != "multi_worker" or keras.config.backend() != "jax" or _joined():
        return
    addresses, count, index = _settings()
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # collectives between CPU devices
    try:
        keras.distribution.initialize(addresses, count, index)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrmlabError(f"multi_worker: process {index} of {count} could not join at {addresses}: {first}") from None


def process_count() -> int:
    """How many processes train together (1 unless joined by :func:`join_processes`)."""
    if not _joined():
        return 1
    import jax

    return int(jax.process_count())


def process_index() -> int:
    """This process's index among them (0: the chief, and a process alone)."""
    if not _joined():
        return 0
    import jax

    return int(jax.process_index())


def is_chief() -> bool:
    """Whether this process writes the run (process 0, or a process alone)."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (nothing for a process alone)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def local_rows(n: int) -> slice:
    """This process's share of ``n`` rows (``n`` divisible by the process count): process ``i`` of ``P`` takes rows
    ``[i n / P, (i + 1) n / P)``, so the processes' parts, put together in order, are the ``n`` rows."""
    count, index = process_count(), process_index()
    if n % count:
        raise ValueError(f"{n} rows do not split evenly across {count} processes")
    return slice(index * n // count, (index + 1) * n // count)


def _copy_run(run_dir: Path, scratch: Path) -> Path:
    """A copy of the chief's run folder in ``scratch``, beside links to the finished stage caches there are now."""
    folder = scratch / run_dir.name
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns(LOCK))
    stages = scratch / "_stages"
    stages.mkdir()
    found = run_dir.parent / "_stages"
    for cached in sorted(found.iterdir()) if found.is_dir() else []:
        if (cached / "stage.json").exists():
            (stages / cached.name).symlink_to(cached.resolve(), target_is_directory=True)
    return folder


@contextlib.contextmanager
def run_folder(run_dir: Path) -> Iterator[Path]:
    """The folder this process trains the run in, for the ``with`` block.

    A process alone, or the chief, holds the run's lock and yields ``run_dir`` (which must exist). Another process
    of a multi-process run takes no lock: once the chief holds it, it copies the chief's run folder to a private
    scratch folder and yields that (removed afterwards), and leaves the block only when the chief has finished
    (its outputs are in ``run_dir``).

    Args:
        run_dir: the run's folder in the runs folder.

    Yields:
        The folder to train the run in.
    """
    if process_count() == 1:
        with run_lock(run_dir):
            yield run_dir
        return
    names = [f"crmlab-{run_dir.name}-{step}" for step in ("locked", "copied", "finished")]
    if is_chief():
        with run_lock(run_dir):
            barrier(names[0])
            barrier(names[1])  # the others copied the run folder; now it may change
            yield run_dir
        barrier(names[2])
        return
    barrier(names[0])
    with tempfile.TemporaryDirectory(prefix=f"crmlab-process{process_index()}-") as scratch:
        folder = _copy_run(run_dir, Path(scratch))
        barrier(names[1])
        yield folder
        barrier(names[2])


def record_devices(state: CheckpointState, recipe: Recipe, replicas: int) -> dict[str, str]:
    """Record the devices (over all processes), processes and global batch per stage a run trains with in its
    ``state`` (committed with its next checkpoint), as MLflow tags.

    A run resumed on another device count would change its global batch, so its result, midway: refused unless
    ``CRMLAB_ALLOW_DEVICE_CHANGE=1``.

    Returns:
        The tags ``crmlab.devices``, ``crmlab.processes`` and ``crmlab.global_batch`` (one number, or
        ``stage=batch`` pairs when the stages' batches differ).

    Raises:
        CrmlabError: the run started on another device count.
    """
    before = state["devices"]
    if before is not None and before != replicas and os.environ.get(ALLOW_DEVICE_CHANGE) != "1":
        batch = recipe.batch_size
        raise CrmlabError(
            f"{state.run_dir}: this run started on {before} device(s) (global batch {batch * before}) and this "
            f"process has {replicas} (global batch {batch * replicas}); resume it on {before}, or set "
            f"{ALLOW_DEVICE_CHANGE}=1 to go on with the new global batch"
        )
    batches = {stage.name: (stage.batch_size or recipe.batch_size) * replicas for stage in recipe.stages}
    state["devices"], state["processes"], state["global_batch"] = replicas, process_count(), batches
    sizes = set(batches.values())
    batch_tag = str(sizes.pop()) if len(sizes) == 1 else ",".join(f"{k}={v}" for k, v in batches.items())
    return {"crmlab.devices": str(replicas), "crmlab.processes": str(process_count()), "crmlab.global_batch": batch_tag}


def predict_across(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``model``'s outputs for ``x`` when several processes train it: every process passes the same ``x`` and gets
    every output.

    Keras' ``predict`` cannot fetch outputs that span other processes' devices, so each global batch of
    ``batch_size`` rows (both divisible by the device count) is assembled from the processes' slices of it, run
    through the model's compiled forward pass, and gathered back onto every process.

    Args:
        model: a model built under the run's ``DataParallel`` distribution.
        x: ``(n, ...)`` inputs, the same in every process.
        batch_size: the global batch.

    Returns:
        ``(n, ...)`` outputs, the same in every process.
    """
    import jax
    from jax.experimental import multihost_utils

    distribution = keras.distribution.distribution()
    forward = jax.jit(lambda t, n, xs: model.stateless_call(t, n, xs, training=False)[0])
    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]
    outputs = []
    for start in range(0, len(x), batch_size):
        rows = x[start : start + batch_size]
        layout: Any = distribution.get_data_layout(rows.shape).backend_layout
        batch = jax.make_array_from_process_local_data(layout, rows[local_rows(len(rows))], rows.shape)
        outputs.append(np.asarray(multihost_utils.process_allgather(forward(trainable, fixed, batch), tiled=True)))
    return np.concatenate(outputs)
