"""Check a lent GPU in one call: step time, the runner's loop, parallel runs, a killed run resumed, bf16 accuracy.

    python bench/device_check.py --out $OUT/device_check.json     # on the GPU machine (JAX; no MLflow, no TensorFlow)
    python bench/device_check.py --quick --out /tmp/dc.json       # the same steps on the CPU at toy sizes (CI)
    python bench/device_check.py --only 1 2                       # some of the steps

Steps, each timed and recorded; a step that fails is recorded with its one-line error (and the tail of its log) and
the next step runs; the exit code is 1 if any step failed:

1. canonical CRMnet step time, float32 and mixed_bfloat16, batch 1024: ``crmlab bench``;
2. the runner's loop (``train_run``) against the bare step, with the first epoch (compile) and the second stage's
   recompile: :func:`fit_throughput.loop_rate` with two stages; the bare step is step 1's float32 figure;
3. ``crmlab ablate`` of the tiny test study: a) ``--jobs 2``; b) four runs sharing one GPU (``--jobs 4
   --runs-per-gpu 4``; skipped without a GPU). Every run must finish; the placement each worker recorded
   (``placement.json``) is kept;
4. ``crmlab train`` of the tiny test study, SIGKILLed once ``state.json`` shows a finished epoch, then the same
   command again: it must resume (the epochs trained before the kill are kept, not trained again) and finish;
5. bf16 against float32 accuracy: ``crmlab train studies/train_small.yaml`` on canonical CRMnet for a few epochs in
   each precision (side by side, each with at most 40 % of the GPU's memory), test Pearson r of both and their
   difference.

Steps 1 and 2 run alone (they are timings); steps 3-5 then run side by side, so their seconds are wall time under
each other's load (the JSON's ``concurrent_steps``). Every command runs in its own process with
``KERAS_BACKEND=jax`` and ``--no-mlflow``; this process never imports Keras or a backend, so it holds no GPU memory.
A time budget (``--budget``, default 290 s) bounds the whole check: a command still running when it is spent is
killed and its step fails as timed out. The JSON (``--out``) is rewritten after every step, so a check cut short
still leaves what it measured. Without a visible GPU it stops at once (exit code 2) unless ``--quick``.

``--quick`` hides the GPUs (``JAX_PLATFORMS=cpu``) and uses the tiny test graph, batch 64, 1-3 epochs, XLA without
its CPU optimisations and a JAX persistent compilation cache shared by its processes (in the work folder; the JSON's
``machine.jax_compilation_cache_entries`` counts what it holds at the end): its times say nothing about a GPU, or
about a CPU. Steps 1 and 2 run first, so that steps 3-5 load the tiny graph's float32 training step (the one all of
them train) from that cache rather than compiling it again. The GPU check has no compilation cache: its steps 1 and 2
time the compilations themselves.

The steps are in ``device_steps.py``, the commands' environment, sizes and budget in ``device_context.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from device_context import GPU_SIZES, QUICK_SIZES, ROOT, Context, StepFailed
from device_steps import ablation, accuracy, fit_child, fit_loop, kill_and_resume, step_time

__all__ = ["CHECKS", "Check", "Step", "machine", "main"]


@dataclass
class Step:
    """One step's record in the JSON file and row of the table."""

    id: str
    check: str
    status: str = "not run"
    seconds: float | None = None
    summary: str = ""
    error: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    log_tail: list[str] = field(default_factory=list)


CHECKS = {
    "1": "canonical CRMnet step time, float32 and mixed_bfloat16 (crmlab bench)",
    "2": "runner loop vs bare step, first epoch and stage recompile (fit_throughput)",
    "3a": "crmlab ablate --jobs 2 (tiny study): runs finish, placements",
    "3b": "crmlab ablate --jobs 4 --runs-per-gpu 4: four runs sharing one GPU",
    "4": "crmlab train SIGKILLed after its first checkpoint, then resumed",
    "5": "bf16 vs float32 accuracy, short canonical run (test Pearson r)",
}


class Check:
    """The steps' records, the JSON file they are written to after every step, and the progress lines."""

    def __init__(self, out: Path, header: dict[str, Any], quick: bool) -> None:
        self.out = out
        self.header = header
        self.steps = {sid: Step(sid, check) for sid, check in CHECKS.items()}
        if quick:
            self.steps["1"].check = self.steps["1"].check.replace("canonical CRMnet", "tiny graph")
            self.steps["5"].check = self.steps["5"].check.replace("canonical", "tiny")
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def run(self, sid: str, body: Callable[[], tuple[dict[str, Any], str]]) -> Step:
        """Run one step's ``body`` (returns values and a one-line summary) and record how it went."""
        step = self.steps[sid]
        self.say(f"step {sid}: {step.check} ...")
        start = time.monotonic()
        try:
            step.values, step.summary = body()
            step.status = "ok"
        except Exception as exc:  # a failing step is recorded and the check goes on
            step.status = "failed"
            step.error = one_line(exc)
            step.values = getattr(exc, "values", {})
            step.log_tail = getattr(exc, "log", [])
        step.seconds = round(time.monotonic() - start, 1)
        self.say(f"step {sid}: {step.status} in {step.seconds} s: {step.summary or step.error}")
        self.write()
        return step

    def skip(self, sid: str, reason: str) -> None:
        step = self.steps[sid]
        step.status, step.summary = "skipped", f"skipped: {reason}"
        self.say(f"step {sid}: {step.summary}")
        self.write()

    def say(self, line: str) -> None:
        with self.lock:
            print(f"[{time.monotonic() - self.started:6.1f} s] {line}", flush=True)

    def failed(self) -> list[str]:
        return [s.id for s in self.steps.values() if s.status == "failed"]

    def write(self) -> None:
        """Write the JSON file (atomically: a reader never sees half of it)."""
        with self.lock:
            doc = {
                **self.header,
                "seconds": round(time.monotonic() - self.started, 1),
                "failed": self.failed(),
                "steps": [asdict(s) for s in self.steps.values()],
            }
            self.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.out.with_name(self.out.name + ".tmp")
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            os.replace(tmp, self.out)

    def table(self) -> str:
        """The markdown table of every step."""
        lines = ["| step | check | status | seconds | result |", "|---|---|---|---|---|"]
        for s in self.steps.values():
            result = (s.summary or s.error) if s.status != "failed" else f"error: {s.error}"
            seconds = "" if s.seconds is None else f"{s.seconds:.1f}"
            lines.append(f"| {s.id} | {s.check} | {s.status} | {seconds} | {result.replace('|', '/')} |")
        return "\n".join(lines)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return (message if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {message}")[:500]


def machine(gpus: list[str], quick: bool) -> dict[str, Any]:
    """What ran the check: GPUs (from ``nvidia-smi``, without initialising CUDA here), packages, commit."""
    versions = {}
    for package in ("crmlab", "keras", "jax", "jaxlib", "numpy", "tensorflow", "mlflow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    names = []
    if gpus:
        try:
            query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]
            names = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError):
            names = []
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=20
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "gpus": gpus,
        "gpu_names": names,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "packages": versions,
        "commit": commit or None,
        "backend": "jax",
        "cpu_only": quick or not gpus,
        "jax_compilation_cache": "per check, shared by its processes" if quick else None,
    }


def cache_entries(folder: Path) -> int:
    """Files in the JAX compilation cache folder (0 if there is none)."""
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CPU, toy sizes (the test suite's check)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench/results/device_check.json", help="JSON file of the results"
    )
    parser.add_argument("--only", nargs="+", choices=["1", "2", "3", "4", "5"], help="run these steps only")
    parser.add_argument("--budget", type=float, help="seconds the whole check may take (default 290; quick 600)")
    parser.add_argument("--work-dir", type=Path, help="keep runs folders and logs here (default: a temporary folder)")
    parser.add_argument("--fit-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fit_child:
        return fit_child(json.loads(args.fit_child))

    sizes = QUICK_SIZES if args.quick else GPU_SIZES
    if args.quick:
        gpus: list[str] = []
    else:
        from crmlab.runners.parallel import detect_gpus

        gpus = detect_gpus()
        if not gpus:
            print(
                "device_check: no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi); --quick checks the CPU at toy"
                " sizes",
                file=sys.stderr,
            )
            return 2
    budget = args.budget or sizes.budget_s
    header = {
        "script": "bench/device_check.py",
        "quick": args.quick,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "budget_s": budget,
        "machine": machine(gpus, args.quick),
        "concurrent_steps": ["3a", "3b", "4", "5"],
    }
    check = Check(args.out, header, args.quick)
    chosen = set(args.only or ["1", "2", "3", "4", "5"])
    for sid in check.steps:
        if sid[0] not in chosen:
            check.skip(sid, "not chosen (--only)")
    with tempfile.TemporaryDirectory(prefix="device_check_") as tmp:
        work = args.work_dir.resolve() if args.work_dir else Path(tmp)
        ctx = Context(sizes, work, budget, gpus, args.quick)
        check.say(f"work folder {work}; budget {budget:.0f} s; GPUs: {', '.join(gpus) or 'none'}")
        run_steps(check, ctx, chosen)
        if ctx.jax_cache:
            header["machine"]["jax_compilation_cache_entries"] = cache_entries(ctx.jax_cache)
    check.write()
    print(check.table())
    print(f"results: {args.out}")
    return 1 if check.failed() else 0


def run_steps(check: Check, ctx: Context, chosen: set[str]) -> None:
    """Steps 1 and 2 alone (they time the device), then 3, 4 and 5 side by side."""
    tasks: list[Callable[[], Any]] = []
    if "5" in chosen:
        tasks.append(lambda: check.run("5", lambda: accuracy(ctx)))
    if "3" in chosen:
        tasks.append(lambda: ablations(check, ctx))
    if "4" in chosen:
        tasks.append(lambda: check.run("4", lambda: kill_and_resume(ctx)))
    timings(check, ctx, chosen)
    with ThreadPoolExecutor(max_workers=max(len(tasks), 1)) as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()


def timings(check: Check, ctx: Context, chosen: set[str]) -> None:
    """Step 1, then step 2 (which takes step 1's float32 rate as the bare step)."""
    if "1" in chosen:
        check.run("1", lambda: step_time(ctx))
    if "2" in chosen:
        first = check.steps["1"]
        bare = first.values["float32"]["seq_per_s"] if first.status == "ok" else None
        check.run("2", lambda: fit_loop(ctx, bare))


def ablations(check: Check, ctx: Context) -> None:
    """Step 3a, then 3b (four runs on one GPU), or 3b skipped without a GPU."""
    check.run("3a", lambda: ablation(ctx, jobs=2))
    if not ctx.gpus:
        check.skip("3b", "no GPU" + (" (--quick runs on the CPU)" if ctx.quick else ""))
    else:
        check.run("3b", lambda: ablation(ctx, jobs=4, runs_per_gpu=4))


if __name__ == "__main__":
    sys.exit(main())
