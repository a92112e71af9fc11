"""The child process that measures a trial's costs that need a model built apart from training: ``flops`` (XLA's
cost analysis, on JAX) and ``step_time`` (a bare training step, timed beside canonical's).

Run as ``python -m crmlab.search.arch._cost_probe``: it reads a JSON request on stdin and writes a JSON answer on
stdout (:func:`crmlab.search.arch._costs.probe` starts it). A request is ``{"task": "flops", "graphs": [GRAPH, ...]}``
or ``{"task": "step_time", "graphs": [TRIAL, CANONICAL], "precision", "batch_size", "steps", "warmup", "lock"}``.

Step time follows :mod:`crmlab.runners.benchmark._step_time`: random tokens, the model compiled as the runner compiles
it, ``warmup`` untimed steps, then the median of ``steps`` timed ones; the trial's and canonical's steps alternate so
that both see the same load, and the answer is their ratio. An exclusive lock on the file ``lock`` is held
meanwhile, so two crmlab processes of one machine never measure at once; the machine's load average is recorded.
"""

from __future__ import annotations

import fcntl
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["flops_of", "main", "median_ratio", "paired_step_times", "step_time_answer"]


def paired_step_times(
    models: Sequence[Any], batch: tuple[Any, Any], steps: int, warmup: int, clock: Callable[[], float]
) -> list[list[float]]:
    """Seconds of ``steps`` training steps of each model (``train_on_batch`` on one batch), after ``warmup``
    untimed steps each; the models' timed steps alternate.

    Returns:
        One list of ``steps`` durations per model, in the order of ``models``.
    """
    x, y = batch
    for model in models:
        for _ in range(warmup):
            model.train_on_batch(x, y)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(steps):
        for i, model in enumerate(models):
            start = clock()
            model.train_on_batch(x, y)
            times[i].append(clock() - start)
    return times


def median_ratio(trial: Sequence[float], canonical: Sequence[float]) -> tuple[float, float, float]:
    """The medians of the trial's and canonical's step times and their ratio (trial / canonical)."""
    a, b = statistics.median(trial), statistics.median(canonical)
    return a, b, a / b


def step_time_answer(
    models: Sequence[Any],
    batch: tuple[Any, Any],
    steps: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Time the trial's model (first) against canonical's (second) and describe it: ``seconds``,
    ``canonical_seconds``, ``ratio``, ``steps``, ``warmup``, ``load`` (1-minute load average before timing) and the
    measuring process's ``pid``."""
    load = os.getloadavg()[0]
    trial, canonical = paired_step_times(models, batch, steps, warmup, clock)
    seconds, canonical_seconds, ratio = median_ratio(trial, canonical)
    return {
        "seconds": seconds,
        "canonical_seconds": canonical_seconds,
        "ratio": ratio,
        "steps": steps,
        "warmup": warmup,
        "load": load,
        "pid": os.getpid(),
    }


def flops_of(model: Any, input_shape: Sequence[int]) -> float:
    """Floating-point operations of one forward pass of ``model`` on one sequence, by XLA's cost analysis of the
    jitted inference function (JAX backend)."""
    import jax
    import numpy as np

    x = np.zeros((1, *input_shape), dtype="int32")
    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])

    def forward(trainable: Any, non_trainable: Any, inputs: Any) -> Any:
        return model.stateless_call(trainable, non_trainable, inputs, training=False)[0]

    cost = jax.jit(forward).lower(*state, x).compile().cost_analysis()
    if isinstance(cost, list):  # older JAX: one dict per device
        cost = cost[0]
    return float(cost["flops"])


def _graphs(request: dict[str, Any]) -> list[Any]:
    from crmlab.registry import parse_graph, resolve_graph

    return [resolve_graph(parse_graph(g, "cost probe")) for g in request["graphs"]]


def _flops(request: dict[str, Any]) -> dict[str, Any]:
    import jax
    import jaxlib
    import keras

    from crmlab.blocks.assemble import assemble

    values = []
    for graph in _graphs(request):
        model = assemble(graph)
        values.append(flops_of(model, graph.inputs[next(iter(graph.inputs))].shape))
        keras.backend.clear_session(free_memory=False)
    platform = jax.default_backend()
    return {
        "flops": values,
        "counter": f"xla cost_analysis (jax {jax.__version__}, jaxlib {jaxlib.__version__}, {platform})",
    }


def _step_time(request: dict[str, Any]) -> dict[str, Any]:
    import keras

    from crmlab.runners.benchmark import bench_recipe, compiled_model, random_batch

    graphs = _graphs(request)
    recipe = bench_recipe(request.get("precision", "float32"), int(request["batch_size"]))
    models = [compiled_model(g, recipe)[0] for g in graphs]
    batch = random_batch(graphs[0].inputs[next(iter(graphs[0].inputs))].shape, int(request["batch_size"]))
    lock = Path(request["lock"])
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            answer = step_time_answer(models, batch, int(request["steps"]), int(request["warmup"]))
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    answer["backend"] = keras.config.backend()
    return answer


def main() -> int:
    """Answer one JSON request from stdin on stdout (the last line); exit 1 with the error on stderr."""
    from crmlab.runners.parallel import import_keras_quietly

    request = json.loads(sys.stdin.read())
    import_keras_quietly()
    answer = _flops(request) if request["task"] == "flops" else _step_time(request)
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
