"""A trial's costs, measured before it trains: ``params`` (exact, here), ``flops`` and ``step_time`` (in a child
process, :mod:`crmlab.search.arch._cost_probe`), and the constraints they break.

``flops`` is XLA's cost analysis of one forward pass on one sequence. It is a float whose value depends on the XLA
version (fusion, what counts as a flop), so the counter and its version are recorded beside it (``cost_counter``).
``step_time`` is the median wall time of a bare training step (random tokens, no trained weights needed) as a
ratio to canonical's measured in the same process, so it does not depend on the machine; the seconds and the load
average are recorded with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crmlab.registry import CrmlabError
from crmlab.search.arch._study import Search, TrialSpec

__all__ = [
    "PROBE_ENV",
    "STEP_TIME_LOCK",
    "TrialCosts",
    "broken_constraints",
    "flops_per_sequence",
    "measure_costs",
    "probe",
]

STEP_TIME_LOCK = Path(tempfile.gettempdir()) / "crmlab-step-time.lock"
"""The machine-wide lock held while a step time is measured (one crmlab process of a machine measures at a time)."""
STEP_TIME_STEPS = 10
"""Timed steps per model (the median is kept)."""
STEP_TIME_WARMUP = 3
"""Untimed first steps per model (compilation, allocation)."""


@dataclass
class TrialCosts:
    """What was measured of one trial before training: ``values`` (cost -> value: ``params`` as a count,
    ``flops`` per sequence, ``step_time`` as a ratio to canonical) and how (``info``: the flop counter, the step
    time in seconds, canonical's, the load average)."""

    values: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


PROBE_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
"""The child takes GPU memory as it needs it: by default JAX would claim 75% of a GPU that the process training
beside it (a search worker) already uses."""


def probe(
    request: Mapping[str, Any], backend: str | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Answer ``request`` in a child process (:mod:`crmlab.search.arch._cost_probe`), with ``KERAS_BACKEND`` =
    ``backend`` when given, and ``env`` (with :data:`PROBE_ENV`) added to this process's environment.

    Raises:
        CrmlabError: the child failed (its last error line).
    """
    env = {**os.environ, **PROBE_ENV, **(env or {}), **({"KERAS_BACKEND": backend} if backend else {})}
    proc = subprocess.run(
        [sys.executable, "-m", "crmlab.search.arch._cost_probe"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise CrmlabError(f"cost probe ({request.get('task')}) failed: {lines[-1] if lines else proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def flops_per_sequence(graph_docs: Sequence[Mapping[str, Any]]) -> tuple[list[float], str]:
    """Forward-pass flops of each graph (a graph spec document) on one sequence, by XLA's cost analysis on JAX's CPU
    platform (in a child process on the JAX backend, whatever this process's backend and devices: the count does
    not need a GPU, and is the same on every machine with the same JAX).

    Returns:
        The flops of each graph, in order, and the counter that gave them (with its version).
    """
    request = {"task": "flops", "graphs": [dict(g) for g in graph_docs]}
    answer = probe(request, backend="jax", env={"JAX_PLATFORMS": "cpu"})
    return [float(v) for v in answer["flops"]], str(answer["counter"])


def measure_costs(search: Search, spec: TrialSpec, names: Sequence[str], lock: Path = STEP_TIME_LOCK) -> TrialCosts:
    """Measure the costs ``names`` (``params``, ``flops``, ``step_time``) of the trial ``spec``."""
    from crmlab.runners.studyfile import check_assembles

    costs = TrialCosts()
    if "params" in names:
        costs.values["params"] = float(check_assembles(spec.graph, spec.recipe, str(search.path)))
    if "flops" in names:
        (flops,), counter = flops_per_sequence([spec.graph_doc])
        costs.values["flops"] = flops
        costs.info["flops_counter"] = counter
    if "step_time" in names:
        answer = probe(
            {
                "task": "step_time",
                "graphs": [spec.graph_doc, search.base_graph],
                "precision": spec.recipe.precision,
                "batch_size": spec.recipe.batch_size,
                "steps": STEP_TIME_STEPS,
                "warmup": STEP_TIME_WARMUP,
                "lock": str(lock),
            }
        )
        costs.values["step_time"] = float(answer["ratio"])
        costs.info.update(
            {
                "step_seconds": answer["seconds"],
                "canonical_step_seconds": answer["canonical_seconds"],
                "step_time_load": answer["load"],
                "step_time_backend": answer["backend"],
                "step_time_pid": answer["pid"],
            }
        )
    return costs


def broken_constraints(search: Search, values: Mapping[str, float]) -> dict[str, float]:
    """Each constraint's violation ``value - max`` (> 0: infeasible), for the constrained costs in ``values``."""
    return {k: values[k] - limit.max for k, limit in search.doc.constraints.items() if k in values}
