"""Joining the processes of a multi-process JAX run (``recipe.strategy: multi_worker``), and each one's place among
them: its index, whether it is the chief, barriers and its share of a batch's rows.

Every process runs the same command (``crmlab train STUDY --backend jax --set recipe.strategy=multi_worker``) with
Keras' environment variables: :data:`ADDRESSES` (the coordinator's ``host:port``, or a comma list of every
process's address, the coordinator first), :data:`NUM_PROCESSES` and :data:`PROCESS_ID` (``0`` .. ``N-1``).
:func:`join_processes` hands them to ``keras.distribution.initialize`` (``jax.distributed.initialize``; gloo
collectives between CPU devices) before JAX first uses a device; the model then trains under
``keras.distribution.DataParallel`` over every process's devices, each process feeding its slice of every global
batch.

Process 0, the chief, is the only one that writes: it takes the run's lock and writes the run folder, checkpoints,
outputs and the MLflow run. The others take no lock and write nothing in the runs folder: each trains in a private
scratch copy of the chief's run folder (:mod:`crmlab.runners.parallel._process_folders`; taken while the chief holds
the lock, so a resumed run starts from the chief's checkpoint: the runs folder must be one shared file system), and
returns the chief's result once the chief has written it. Predictions are gathered from every process by
:mod:`crmlab.runners.parallel._gather`. None of this enters the run key: the process count and the coordinator are
environment, not recipe.
"""

from __future__ import annotations

import os

import keras

from crmlab.registry import CrmlabError, SpecError

__all__ = [
    "ADDRESSES",
    "NUM_PROCESSES",
    "PROCESS_ID",
    "barrier",
    "is_chief",
    "join_processes",
    "local_rows",
    "process_count",
    "process_index",
]

ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
"""The coordinator's ``host:port`` (or every process's, comma-separated, the coordinator first)."""
NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
"""How many processes train the run."""
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
"""This process's index, ``0`` (the chief) to ``NUM_PROCESSES - 1``."""


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
