"""Bare step time: the seconds per training step of a spec across backends, strategies, precisions and batch sizes.

Interleaved A/B timing of models is :mod:`crmlab.runners.benchmark._interleaved` and the input pipeline's throughput
:mod:`crmlab.runners.benchmark._pipeline`; ``crmlab bench`` and the scripts in ``bench/`` are thin wrappers.

Time per step is measured as the paper does (Ding et al. 2023, section 3.4): on random tokens, with the model
compiled exactly as the training runner compiles it (loss, optimiser, schedule, metrics, ``jit_compile``), after
``warmup`` steps that absorb compilation, as the median wall time of ``train_on_batch`` (which returns only when
the step has finished on every backend). A Keras backend is fixed per process, so backends other than the running
one are measured in a child process (``python -m crmlab.runners.benchmark._step_time``) that answers in JSON. The
table and its MLflow run are written by :mod:`crmlab.runners.benchmark._report`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from crmlab.blocks.assemble import assemble
from crmlab.registry import CrmlabError, GraphSpec, load_graph, resolve_graph
from crmlab.runners.parallel import is_out_of_memory, make_distribution
from crmlab.runners.studyfile import Recipe, Stage
from crmlab.runners.training import compile_for_training

__all__ = [
    "BACKENDS",
    "PAPER_DATASET_SIZE",
    "PRECISIONS",
    "STRATEGIES",
    "Cell",
    "bench_recipe",
    "compiled_model",
    "measure",
    "random_batch",
    "step_time_table",
    "time_steps",
]

PAPER_DATASET_SIZE = 30_722_376
"""Training sequences of the paper's epoch-time estimate (the DREAM challenge training set)."""
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
BACKENDS = ("tensorflow", "jax")
STRATEGIES = {"one": "none", "all": "auto"}
"""Table strategy -> ``recipe.strategy``: one device, or every local device (mirrored / data-parallel)."""


@dataclass
class Cell:
    """One measured setting of the step-time table; ``seconds_per_step`` is ``None`` when it could not run."""

    spec: str
    backend: str
    strategy: str
    devices: int
    precision: str
    batch_size: int
    jit_compile: str
    seconds_per_step: float | None
    steps: int
    error: str = ""

    @property
    def sequences_per_second(self) -> float | None:
        return None if not self.seconds_per_step else self.batch_size / self.seconds_per_step

    def epoch_seconds(self, dataset_size: int) -> float | None:
        """Estimated time of one epoch over ``dataset_size`` sequences (full batches)."""
        if not self.seconds_per_step:
            return None
        return math.ceil(dataset_size / self.batch_size) * self.seconds_per_step


def random_batch(input_shape: Sequence[int], batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random tokens ``(batch, *input_shape)`` int32 in 0..4 and targets ``(batch, 1)`` float32."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 5, (batch_size, *input_shape)).astype("int32")
    return tokens, rng.normal(size=(batch_size, 1)).astype("float32")


def bench_recipe(precision: str = "float32", batch_size: int = 64, strategy: str = "none", **overrides: Any) -> Recipe:
    """A one-stage recipe with crmlab's defaults apart from the given settings (what the runner would train)."""
    return Recipe(
        precision=precision,
        batch_size=batch_size,
        strategy=strategy,
        stages=[Stage(name="bench", data="bench")],
        **overrides,
    )


def compiled_model(graph: GraphSpec, recipe: Recipe, steps_per_epoch: int = 1000) -> tuple[keras.Model, int]:
    """Assemble ``graph`` under ``recipe``'s precision and distribution and compile it as the runner does.

    Returns:
        The compiled model and the number of replicas (the global batch is ``recipe.batch_size * replicas``).
    """
    keras.config.set_dtype_policy(recipe.precision)
    dist = make_distribution(recipe.strategy)
    with dist.scope():
        model = assemble(graph)
        compile_for_training(model, recipe, recipe.stages[0], steps_per_epoch, dist)
    return model, dist.replicas


def time_steps(model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int, warmup: int = 1) -> list[float]:
    """Wall seconds of each of ``steps`` training steps on one batch, after ``warmup`` untimed steps."""
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return times


def measure(
    spec: str | Path,
    precision: str = "float32",
    batch_size: int = 64,
    strategy: str = "one",
    steps: int = 5,
    warmup: int = 2,
    jit_compile: bool | str = "auto",
) -> Cell:
    """Time training steps of ``spec`` in this process's backend; an out-of-memory setting gives a blank cell.

    Args:
        spec: graph spec file.
        precision: Keras dtype policy (``float32``, ``mixed_float16``, ``mixed_bfloat16``).
        batch_size: sequences per device; the global batch is this times the device count.
        strategy: ``one`` device or ``all`` local devices.
        steps: timed steps (the median is reported).
        warmup: untimed first steps (compilation).
        jit_compile: ``recipe.jit_compile``.
    """
    graph = resolve_graph(load_graph(spec))
    recipe = bench_recipe(precision, batch_size, STRATEGIES[strategy], jit_compile=jit_compile)
    backend = keras.config.backend()
    devices, error, seconds, jit = 1, "", None, str(jit_compile)
    try:
        model, devices = compiled_model(graph, recipe)
        jit = str(model.jit_compile)  # what Keras resolved ``auto`` to
        x, y = random_batch(graph.inputs[next(iter(graph.inputs))].shape, batch_size * devices)
        seconds = statistics.median(time_steps(model, x, y, steps, warmup))
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        error = "out of memory"
    finally:
        keras.config.set_dtype_policy("float32")
        if backend == "jax":
            keras.distribution.set_distribution(None)
        keras.backend.clear_session()
    return Cell(
        spec=graph.name,
        backend=backend,
        strategy=strategy,
        devices=devices,
        precision=precision,
        batch_size=batch_size * devices,
        jit_compile=jit,
        seconds_per_step=seconds,
        steps=steps,
        error=error,
    )


def step_time_table(
    spec: str | Path,
    batch_sizes: Sequence[int] = (32, 64, 128),
    precisions: Sequence[str] = ("float32",),
    backends: Sequence[str] | None = None,
    strategies: Sequence[str] = ("one",),
    steps: int = 5,
    warmup: int = 2,
    jit_compile: bool | str = "auto",
    on_cell: Callable[[Cell], None] | None = None,
) -> list[Cell]:
    """Measure every combination of backend x strategy x precision x batch size.

    The running backend is measured here, every other one in a child process with ``KERAS_BACKEND`` set.

    Raises:
        CrmlabError: an unknown precision, backend or strategy, or a child process that failed.
    """
    _check_choices("precision", precisions, PRECISIONS)
    _check_choices("strategy", strategies, tuple(STRATEGIES))
    backends = list(backends or [keras.config.backend()])
    _check_choices("backend", backends, BACKENDS)
    cells: list[Cell] = []
    settings = [(s, p, b) for s in strategies for p in precisions for b in batch_sizes]
    for backend in backends:
        if backend == keras.config.backend():
            for strategy, precision, batch in settings:
                cell = measure(spec, precision, batch, strategy, steps, warmup, jit_compile)
                cells.append(cell)
                if on_cell is not None:
                    on_cell(cell)
        else:
            for cell in _measure_in_child(backend, spec, settings, steps, warmup, jit_compile):
                cells.append(cell)
                if on_cell is not None:
                    on_cell(cell)
    return cells


def _check_choices(what: str, given: Iterable[str], allowed: Sequence[str]) -> None:
    for value in given:
        if value not in allowed:
            raise CrmlabError(f"--{what}: unknown {what} '{value}' (choose from {', '.join(allowed)})")


def _measure_in_child(
    backend: str,
    spec: str | Path,
    settings: Sequence[tuple[str, str, int]],
    steps: int,
    warmup: int,
    jit_compile: bool | str,
) -> list[Cell]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cells.json"
        request = {"spec": str(spec), "settings": settings, "steps": steps, "warmup": warmup, "jit": jit_compile}
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        cmd = [sys.executable, "-m", "crmlab.runners.benchmark._step_time", json.dumps(request), str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise CrmlabError(f"--backend: measuring on {backend} failed: {last}")
        return [Cell(**c) for c in json.loads(out.read_text())]


def _child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description="measure step-time cells in this process's backend (internal)")
    parser.add_argument("request", help="JSON: spec, settings [[strategy, precision, batch], ...], steps, warmup, jit")
    parser.add_argument("out", help="JSON file to write the cells to")
    args = parser.parse_args(argv)
    req = json.loads(args.request)
    cells = [
        measure(req["spec"], precision, batch, strategy, req["steps"], req["warmup"], req["jit"])
        for strategy, precision, batch in req["settings"]
    ]
    Path(args.out).write_text(json.dumps([asdict(c) for c in cells]))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
