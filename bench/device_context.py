"""The commands of ``bench/device_check.py``: the sizes each step trains, and :class:`Context`, which runs a step's
commands in their own process groups (environment, work folder, logs, the time budget), with the small helpers
the steps share. The steps themselves are in ``device_steps.py``.

With ``--quick`` every command runs on the CPU (``JAX_PLATFORMS=cpu``), with XLA's CPU optimisations off and a JAX
persistent compilation cache in the check's work folder, shared by all of its processes (a later process loads
what an earlier one compiled instead of compiling it again). The GPU check has no such cache: its steps 1 and 2
time the compilations themselves (first epoch, the second stage's recompile).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FIXTURES",
    "GPU_SIZES",
    "LOG_TAIL",
    "PRECISIONS",
    "QUICK_SIZES",
    "ROOT",
    "Context",
    "Sizes",
    "StepFailed",
    "describe_exit",
    "kill_group",
    "number",
    "read_json",
    "run_folders",
    "shown",
]

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests/fixtures/studies"
PRECISIONS = ("float32", "mixed_bfloat16")
SHARED_MEMORY = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
"""Every command of steps 3-5 shares the GPU with the others: none may take 75 % of it at start-up."""
LOG_TAIL = 30
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
"""``--quick`` compiles without XLA's CPU optimisations: half the compile time of the tiny graph, and speed is not
what ``--quick`` checks."""


@dataclass(frozen=True)
class Sizes:
    """What each step trains: the defaults are the GPU sizes (:data:`GPU_SIZES`), :data:`QUICK_SIZES` the toy ones.

    Attributes:
        graph: graph spec of steps 1 and 2.
        batch: batch size of steps 1 and 2.
        bench_steps: timed steps per precision in step 1 (after ``bench_warmup`` untimed ones).
        bench_warmup: untimed first steps (compilation).
        fit_steps: steps per epoch in step 2.
        fit_epochs: epochs per stage in step 2 (two stages).
        seeds: the ablation's seeds (two runs per seed).
        kill_epochs: pretraining epochs of step 4 (its fine-tuning has one), enough for the kill to land mid-run.
        accuracy_study: the train study of step 5.
        accuracy_sets: its ``--set`` overrides.
        budget_s: default of ``--budget``.
    """

    graph: Path = ROOT / "studies/graphs/crmnet.yaml"
    batch: int = 1024
    bench_steps: int = 5
    bench_warmup: int = 2
    fit_steps: int = 32
    fit_epochs: int = 2
    seeds: tuple[int, ...] = (0, 1)
    kill_epochs: int = 6
    accuracy_study: Path = ROOT / "studies/train_small.yaml"
    accuracy_sets: tuple[str, ...] = (
        "graph=graphs/crmnet.yaml",
        "recipe.stages.0.epochs=2",
        "recipe.stages.1.epochs=1",
    )
    budget_s: float = 290


GPU_SIZES = Sizes()
QUICK_SIZES = Sizes(
    graph=FIXTURES / "tiny_graph.yaml",
    batch=64,
    bench_steps=2,
    bench_warmup=1,
    fit_steps=4,
    seeds=(0,),
    kill_epochs=3,
    accuracy_study=FIXTURES / "tiny_train.yaml",
    accuracy_sets=("recipe.stages.0.epochs=1", "recipe.stages.1.epochs=1"),
    budget_s=600,
)


class StepFailed(Exception):
    """A step's check failed; ``values`` holds what it measured before it did, ``log`` the command's log tail."""

    def __init__(self, message: str, values: dict[str, Any] | None = None, log: list[str] | None = None) -> None:
        super().__init__(message)
        self.values = values or {}
        self.log = log or []


class Context:
    """Runs the steps' commands: environment, work folder, logs and the time budget.

    Args:
        sizes: the step sizes.
        work: folder for runs folders, logs and tables.
        budget_s: seconds the whole check may take from now.
        gpus: the GPUs visible (empty on the CPU and with ``--quick``).
        quick: toy sizes on the CPU.

    Attributes:
        jax_cache: the JAX compilation cache folder its commands share (``--quick`` only; None on the GPU).
    """

    def __init__(self, sizes: Sizes, work: Path, budget_s: float, gpus: list[str], quick: bool) -> None:
        self.sizes = sizes
        self.work = work
        self.budget_s = budget_s
        self.deadline = time.monotonic() + budget_s
        self.gpus = gpus
        self.quick = quick
        self.jax_cache = work / "jax-cache" if quick else None
        self.env = {
            **os.environ,
            "KERAS_BACKEND": "jax",
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "CRMLAB_CACHE": str(work / "token-cache"),
        }
        if quick:
            self.env.update(
                JAX_PLATFORMS="cpu",
                CUDA_VISIBLE_DEVICES="",
                JAX_COMPILATION_CACHE_DIR=str(self.jax_cache),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {QUICK_XLA_FLAGS}".strip(),
            )
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        """Seconds of the budget left."""
        return self.deadline - time.monotonic()

    def start(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``python ARGS`` in its own process group, its output into ``logs/NAME.log``.

        Raises:
            StepFailed: the budget is spent.
        """
        if self.left() <= 0:
            raise StepFailed(f"not started: the {self.budget_s:.0f} s budget is spent")
        with open(self.log_path(name), "wb") as log:
            return subprocess.Popen(
                [sys.executable, *args],
                cwd=self.work,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def finish(self, name: str, proc: subprocess.Popen[bytes], check: bool = True) -> int:
        """Wait for ``proc`` until the budget is spent (then kill its process group); its exit code.

        Raises:
            StepFailed: it ran past the budget, or (with ``check``) it exited with a nonzero code; the message is
                its log's last line.
        """
        try:
            rc = proc.wait(timeout=max(self.left(), 0.1))
        except subprocess.TimeoutExpired as exc:
            kill_group(proc)
            raise StepFailed(
                f"{name}: timed out (the {self.budget_s:.0f} s budget is spent)", log=self.tail(name)
            ) from exc
        if check and rc != 0:
            tail = self.tail(name)
            last = tail[-1] if tail else "no output"
            raise StepFailed(f"{name} exited with {describe_exit(rc)}: {last}", log=tail)
        return rc

    def run(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        """Run ``python ARGS`` to its end; a nonzero exit fails the step (see :meth:`finish`)."""
        self.finish(name, self.start(name, args, env))

    def crmlab(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        """Run ``python -m crmlab.cli ARGS`` (JAX, without MLflow) to its end."""
        self.run(name, ["-m", "crmlab.cli", *args], env)

    def log_path(self, name: str) -> Path:
        return self.work / "logs" / f"{name}.log"

    def tail(self, name: str) -> list[str]:
        """The last nonblank lines of a command's log."""
        path = self.log_path(name)
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return [line.rstrip()[:300] for line in lines if line.strip()][-LOG_TAIL:]

    def shared_gpu(self, fraction: float) -> dict[str, str]:
        """Environment of a command that shares the GPU: no pre-allocation, at most ``fraction`` of its memory."""
        return {**SHARED_MEMORY, "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{fraction:.2f}"} if self.gpus else {}


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group this script started ``proc`` in (a command and its workers) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def describe_exit(rc: int) -> str:
    return f"signal {signal.Signals(-rc).name}" if rc < 0 else f"code {rc}"


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def run_folders(runs: Path) -> list[Path]:
    """The run folders of a runs folder (not ``_stages``, ``_studies``, ...)."""
    if not runs.is_dir():
        return []
    return sorted(d for d in runs.iterdir() if d.is_dir() and not d.name.startswith("_"))


def shown(args: Sequence[str]) -> str:
    """A command as a user would type it from the repository root (for the record)."""
    words = ["crmlab", *args[2:]] if list(args[:2]) == ["-m", "crmlab.cli"] else ["crmlab", *args]
    return " ".join(words).replace(f"{ROOT}/", "")


def number(value: str) -> float | None:
    return float(value) if value not in ("", None) else None


# ---- step 1 -------------------------------------------------------------------------------------------------------
