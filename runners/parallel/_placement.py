"""Where parallel runs go: the GPUs a machine shows, one device set per worker process, and the environment that
gives a worker its set.

``crmlab ablate --jobs N`` and ``crmlab search --jobs N`` start N worker processes (slots). :func:`plan_slots`
gives each one its own device set: ``--gpus-per-run K`` GPUs each (data-parallel inside a run), round-robin over
the visible GPUs, one process per GPU group while there are enough of them; when processes outnumber GPU groups,
``--runs-per-gpu M`` processes share a group, each under a memory budget. A slot's devices reach its process only
through the environment it is started with (:meth:`Slot.env`), before it imports a backend:

* ``CUDA_VISIBLE_DEVICES``: the slot's GPUs (an empty value on a machine without GPUs);
* JAX: ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` and ``XLA_PYTHON_CLIENT_MEM_FRACTION`` = 0.9 / M when M processes
  share a GPU (the client allocator's cap; by default every JAX process takes 75 % of a GPU at start-up);
* TensorFlow: ``TF_FORCE_GPU_ALLOW_GROWTH=true`` (memory grows as used instead of being taken whole);
* ``CRMLAB_PLACEMENT``: the slot as JSON, recorded by the worker with the devices it actually saw
  (:func:`record_placement`).

GPUs are found without initialising CUDA in the calling process (:func:`detect_gpus`): ``CUDA_VISIBLE_DEVICES`` when
it is set (it is respected, and the slots re-export its entries), else ``nvidia-smi``. The parent of the workers
then hides every accelerator from itself (:func:`hide_accelerators`) before Keras is imported, so the parent
process, which loads the study and counts parameters, never holds GPU memory that its workers need.

No Keras import at module level: the CLI plans placement before a backend is chosen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crmlab.registry import CrmlabError

__all__ = [
    "PLACEMENT_ENV",
    "Slot",
    "accelerators_hidden",
    "current_slot",
    "detect_gpus",
    "exclusive_slots",
    "hide_accelerators",
    "placement_text",
    "plan_slots",
    "record_placement",
    "set_environment",
]

PLACEMENT_ENV = "CRMLAB_PLACEMENT"
"""Environment variable through which a worker learns its slot (JSON of :class:`Slot`)."""

MEMORY_SHARE = 0.9
"""Fraction of a GPU's memory that the processes sharing it divide between them (the rest is CUDA's own)."""

_HIDDEN = "CRMLAB_HIDDEN_ENV"
"""Where :func:`hide_accelerators` keeps the values it replaced (JSON), so workers get the user's own back."""


@dataclass(frozen=True)
class Slot:
    """One worker process's device set.

    Attributes:
        index: the worker's number (0-based).
        gpus: GPU ids as ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs); empty: CPU only.
        share: worker processes on these GPUs, this one included (1: exclusive).
    """

    index: int
    gpus: tuple[str, ...] = ()
    share: int = 1

    @property
    def memory_fraction(self) -> float | None:
        """The share of each GPU's memory this worker may take, or None when it has its GPUs alone (or none)."""
        return round(MEMORY_SHARE / self.share, 3) if self.gpus and self.share > 1 else None

    def env(self, base: MutableMapping[str, str] | None = None) -> dict[str, str | None]:
        """Environment changes that start a worker on this slot (None: remove the variable).

        Args:
            base: the environment the worker would inherit (default ``os.environ``); values that
                :func:`hide_accelerators` replaced in it are put back first.
        """
        base = os.environ if base is None else base
        env: dict[str, str | None] = dict(json.loads(base.get(_HIDDEN, "{}")))
        env[_HIDDEN] = None
        env[PLACEMENT_ENV] = json.dumps(asdict(self))
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
            env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
            if self.memory_fraction is not None:
                env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
                env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{self.memory_fraction:.3f}"
        return env

    def describe(self) -> str:
        """``worker 1: GPU 0 (shared by 2, 45% of its memory)`` or ``worker 0: CPU``."""
        if not self.gpus:
            return f"worker {self.index}: CPU"
        where = f"GPU{'s' if len(self.gpus) > 1 else ''} {','.join(self.gpus)}"
        if self.share > 1:
            where += f" (shared by {self.share}, {self.memory_fraction:.0%} of its memory)"
        return f"worker {self.index}: {where}"


def detect_gpus(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, found without initialising CUDA.

    Args:
        environ: the environment (default ``os.environ``).

    Returns:
        ``CUDA_VISIBLE_DEVICES``'s entries when it is set (``""`` or ``-1``: none), else the indices ``nvidia-smi``
        lists; ``[]`` without ``nvidia-smi`` or when it fails.
    """
    environ = os.environ if environ is None else environ
    hidden = json.loads(environ.get(_HIDDEN, "{}"))
    visible = (
        hidden["CUDA_VISIBLE_DEVICES"] if "CUDA_VISIBLE_DEVICES" in hidden else environ.get("CUDA_VISIBLE_DEVICES")
    )
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        return [] if ids in ([], ["-1"]) else ids
    exe = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def plan_slots(
    gpus: Sequence[str], jobs: int | None, gpus_per_run: int | None = None, runs_per_gpu: int | None = None
) -> list[Slot]:
    """One device set per worker process.

    Args:
        gpus: the visible GPUs (:func:`detect_gpus`).
        jobs: worker processes; None: one per GPU group times ``runs_per_gpu`` (1 without GPUs).
        gpus_per_run: GPUs per run (data-parallel inside it; default 1).
        runs_per_gpu: at most this many processes share a GPU group (default: as many as ``jobs`` needs).

    Returns:
        ``jobs`` slots; slot ``i`` gets GPU group ``i mod groups``.

    Raises:
        CrmlabError: a GPU option without GPUs, more GPUs per run than visible, or more jobs than
            ``runs_per_gpu`` allows.
    """
    if not gpus:
        for flag, value in (("--gpus-per-run", gpus_per_run), ("--runs-per-gpu", runs_per_gpu)):
            if value is not None:
                raise CrmlabError(f"{flag} {value}: no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi)")
        return [Slot(i) for i in range(jobs or 1)]
    k = gpus_per_run or 1
    if k > len(gpus):
        raise CrmlabError(f"--gpus-per-run {k}: only {len(gpus)} GPU(s) visible ({','.join(gpus)})")
    groups = [tuple(gpus[g * k : (g + 1) * k]) for g in range(len(gpus) // k)]
    if jobs is None:
        jobs = len(groups) * (runs_per_gpu or 1)
    if runs_per_gpu is not None and jobs > len(groups) * runs_per_gpu:
        raise CrmlabError(
            f"--jobs {jobs} with --runs-per-gpu {runs_per_gpu}: {len(groups)} GPU group(s) of {k} hold at most "
            f"{len(groups) * runs_per_gpu} runs at once"
        )
    shares = [len(range(g, jobs, len(groups))) for g in range(len(groups))]
    return [Slot(i, groups[i % len(groups)], shares[i % len(groups)]) for i in range(jobs)]


def exclusive_slots(slots: Sequence[Slot]) -> list[Slot]:
    """The slots for a retry with fewer processes sharing memory: one per GPU group (one CPU slot without GPUs)."""
    groups = list(dict.fromkeys(s.gpus for s in slots)) or [()]
    return [Slot(i, g, 1) for i, g in enumerate(groups)]


def placement_text(slots: Sequence[Slot], gpus: Sequence[str]) -> str:
    """The line printed at start: what was found and where each worker goes."""
    found = f"{len(gpus)} GPU(s) ({','.join(gpus)})" if gpus else "no GPU"
    return f"placement: {found}; " + "; ".join(s.describe() for s in slots) + "; this process: CPU only"


def hide_accelerators(environ: MutableMapping[str, str] | None = None) -> None:
    """Keep this process (the workers' parent) off every accelerator; must run before a backend is imported.

    Sets ``CUDA_VISIBLE_DEVICES=""`` and ``JAX_PLATFORMS=cpu`` and remembers the values they replaced, which
    :meth:`Slot.env` gives back to the workers.
    """
    environ = os.environ if environ is None else environ
    if _HIDDEN not in environ:  # hidden once already (this process, or the one that started it): keep that record
        keep = {name: environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS")}
        environ[_HIDDEN] = json.dumps(keep)
    environ["CUDA_VISIBLE_DEVICES"] = ""
    environ["JAX_PLATFORMS"] = "cpu"


@contextmanager
def accelerators_hidden(environ: MutableMapping[str, str] | None = None) -> Iterator[None]:
    """:func:`hide_accelerators` for the duration, then the environment as it was (a command run in-process, e.g.
    by a test, leaves no hidden GPUs behind)."""
    environ = os.environ if environ is None else environ
    names = (_HIDDEN, "CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS")
    saved = {name: environ.get(name) for name in names}
    hide_accelerators(environ)
    try:
        yield
    finally:
        set_environment(saved, environ)


def set_environment(values: Mapping[str, str | None], environ: MutableMapping[str, str] | None = None) -> None:
    """Set each variable of ``values`` in ``environ`` (default ``os.environ``); None removes it."""
    environ = os.environ if environ is None else environ
    for name, value in values.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value


def current_slot() -> Slot | None:
    """This worker's slot (from ``CRMLAB_PLACEMENT``), or None outside a worker."""
    text = os.environ.get(PLACEMENT_ENV)
    if not text:
        return None
    fields = json.loads(text)
    return Slot(int(fields["index"]), tuple(fields["gpus"]), int(fields["share"]))


def record_placement(run_dir: Path, slot: Slot) -> dict[str, Any]:
    """Write ``placement.json`` into a run folder: the slot and the devices the backend shows this process.

    Args:
        run_dir: the run's folder.
        slot: this worker's slot.

    Returns:
        What was written: ``slot``, ``gpus``, ``share``, ``memory_fraction``, ``devices`` (the backend's device
        names as seen from inside the worker), ``backend`` and ``pid``.
    """
    import keras

    record = {
        **asdict(slot),
        "memory_fraction": slot.memory_fraction,
        "devices": [str(d) for d in keras.distribution.list_devices()],
        "backend": keras.config.backend(),
        "pid": os.getpid(),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "placement.json").write_text(json.dumps(record, indent=1) + "\n")
    return record
