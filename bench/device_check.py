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
each other's load. Every command runs in its own process with ``KERAS_BACKEND=jax`` and ``--no-mlflow``; this
process never imports Keras or a backend, so it holds no GPU memory. A time budget (``--budget``, default 290 s)
bounds the whole check: a command still running when it is spent is killed and its step fails as timed out. The
JSON (``--out``) is rewritten after every step, so a check cut short still leaves what it measured. Without a
visible GPU it stops at once (exit code 2) unless ``--quick``.

``--quick`` hides the GPUs (``JAX_PLATFORMS=cpu``) and uses the tiny test graph, batch 64, 1-3 epochs, XLA without
its CPU optimisations and a JAX compilation cache shared by its processes (in the work folder): its times say nothing
about a GPU, or about a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests/fixtures/studies"
PRECISIONS = ("float32", "mixed_bfloat16")
ABLATION_SETS = ["variants={}", "leave_one_out=[transformer]"]
"""``--set`` overrides of ``tiny_ablation.yaml``: two looks (canonical, no_transformer) per seed."""
SHARED_MEMORY = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
"""Every command of steps 3-5 shares the GPU with the others: none may take 75 % of it at start-up."""
LOG_TAIL = 30
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
"""``--quick`` compiles without XLA's CPU optimisations: half the compile time of the tiny graph, and speed is not
what ``--quick`` checks."""


@dataclass(frozen=True)
class Sizes:
    """What each step trains: the GPU sizes or the ``--quick`` toy sizes.

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

    graph: Path
    batch: int
    bench_steps: int
    bench_warmup: int
    fit_steps: int
    fit_epochs: int
    seeds: tuple[int, ...]
    kill_epochs: int
    accuracy_study: Path
    accuracy_sets: tuple[str, ...]
    budget_s: float


GPU_SIZES = Sizes(
    graph=ROOT / "studies/graphs/crmnet.yaml",
    batch=1024,
    bench_steps=5,
    bench_warmup=2,
    fit_steps=32,
    fit_epochs=2,
    seeds=(0, 1),
    kill_epochs=6,
    accuracy_study=ROOT / "studies/train_small.yaml",
    accuracy_sets=("graph=graphs/crmnet.yaml", "recipe.stages.0.epochs=2", "recipe.stages.1.epochs=1"),
    budget_s=290,
)
QUICK_SIZES = Sizes(
    graph=FIXTURES / "tiny_graph.yaml",
    batch=64,
    bench_steps=2,
    bench_warmup=1,
    fit_steps=4,
    fit_epochs=2,
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


class Context:
    """Runs the steps' commands: environment, work folder, logs and the time budget.

    Args:
        sizes: the step sizes.
        work: folder for runs folders, logs and tables.
        budget_s: seconds the whole check may take from now.
        gpus: the GPUs visible (empty on the CPU and with ``--quick``).
        quick: toy sizes on the CPU.
    """

    def __init__(self, sizes: Sizes, work: Path, budget_s: float, gpus: list[str], quick: bool) -> None:
        self.sizes = sizes
        self.work = work
        self.budget_s = budget_s
        self.deadline = time.monotonic() + budget_s
        self.gpus = gpus
        self.quick = quick
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
                JAX_COMPILATION_CACHE_DIR=str(work / "jax-cache"),
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


def step_time(ctx: Context) -> tuple[dict[str, Any], str]:
    """Step 1: ``crmlab bench`` of the graph in float32 and mixed_bfloat16."""
    s = ctx.sizes
    out = ctx.work / "step_time.csv"
    args = ["bench", str(s.graph), "--backend", "jax", "--batch-sizes", str(s.batch), "--precisions", *PRECISIONS]
    args += ["--steps", str(s.bench_steps), "--warmup", str(s.bench_warmup), "--no-mlflow", "--out", str(out)]
    ctx.crmlab("1-bench", *args)
    with open(out, newline="") as fh:
        rows = {row["precision"]: row for row in csv.DictReader(fh)}
    values: dict[str, Any] = {"command": shown(args), "batch_size": s.batch}
    for precision in PRECISIONS:
        row = rows.get(precision, {})
        values[precision] = {
            "ms_per_step": number(row.get("ms_per_step", "")),
            "seq_per_s": number(row.get("seq_per_s", "")),
            "jit_compile": row.get("jit_compile"),
            "devices": row.get("devices"),
            "error": row.get("error", "missing from the table"),
        }
    broken = [f"{p}: {values[p]['error']}" for p in PRECISIONS if values[p]["seq_per_s"] is None]
    if broken:
        raise StepFailed("; ".join(broken), values)
    f32, bf16 = (values[p]["seq_per_s"] for p in PRECISIONS)
    values["bf16_speedup"] = round(bf16 / f32, 3)
    summary = "; ".join(f"{p} {values[p]['ms_per_step']} ms ({values[p]['seq_per_s']:,.0f} seq/s)" for p in PRECISIONS)
    return values, f"{summary}; bf16 x{values['bf16_speedup']}"


# ---- step 2 -------------------------------------------------------------------------------------------------------


def fit_loop(ctx: Context, bare_step: float | None) -> tuple[dict[str, Any], str]:
    """Step 2: the runner's loop over two stages (a child process running :func:`fit_child`)."""
    s = ctx.sizes
    out = ctx.work / "fit.json"
    request = {
        "graph": str(s.graph),
        "batch": s.batch,
        "steps": s.fit_steps,
        "epochs": s.fit_epochs,
        "step_seq_per_s": bare_step,
        "out": str(out),
    }
    ctx.run("2-fit", [str(Path(__file__).resolve()), "--fit-child", json.dumps(request)])
    child = read_json(out)
    loop, step = child["loop"], child["step_seq_per_s"]
    values = {
        "graph": str(s.graph.relative_to(ROOT)),
        "precision": "float32",
        "batch_size": s.batch,
        "steps_per_epoch": s.fit_steps,
        "epochs_per_stage": s.fit_epochs,
        "stages": 2,
        "first_epoch_s": round(loop["first_epoch_s"], 2),
        "epoch_s": round(loop["epoch_s"], 3),
        "first_epoch_compile_s": round(loop["first_epoch_s"] - loop["epoch_s"], 2),
        "stage_recompile_s": round(loop["stage_recompile_s"], 2),
        "loop_seq_per_s": round(loop["seq_per_s"], 1),
        "step_seq_per_s": round(step, 1),
        "step_from": child["step_from"],
        "loop_vs_step": round(loop["seq_per_s"] / step, 3),
    }
    summary = (
        f"loop {values['loop_seq_per_s']:,.0f} seq/s = {values['loop_vs_step']} x the bare step; first epoch"
        f" {values['first_epoch_s']} s; stage 2 recompile {values['stage_recompile_s']} s"
    )
    return values, summary


def fit_child(request: dict[str, Any]) -> int:
    """Step 2 inside its own process: :func:`fit_throughput.loop_rate` with two stages, and the bare step's rate
    (step 1's, or measured here by :func:`fit_throughput.step_rate` when step 1 has none)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fit_throughput

    graph = Path(request["graph"])
    batch, steps = request["batch"], request["steps"]
    step, source = request["step_seq_per_s"], "step 1"
    if step is None:
        step, source = fit_throughput.step_rate(graph, "float32", batch, steps)[0], "measured by step 2"
    loop = fit_throughput.loop_rate(graph, "float32", batch, steps, request["epochs"], stages=2)
    result = {"loop": loop, "step_seq_per_s": step, "step_from": source}
    Path(request["out"]).write_text(json.dumps(result))
    return 0


# ---- step 3 -------------------------------------------------------------------------------------------------------


def ablation(ctx: Context, jobs: int, runs_per_gpu: int | None = None) -> tuple[dict[str, Any], str]:
    """Step 3: ``crmlab ablate`` of ``tiny_ablation.yaml`` with ``--jobs`` (and ``--runs-per-gpu``)."""
    name = f"3-ablate-jobs{jobs}" + (f"-per-gpu{runs_per_gpu}" if runs_per_gpu else "")
    runs = ctx.work / name
    seeds = ctx.sizes.seeds
    args = ["ablate", str(FIXTURES / "tiny_ablation.yaml"), "--backend", "jax", "--no-mlflow"]
    args += ["--runs-dir", str(runs), "--jobs", str(jobs)]
    for assignment in [*ABLATION_SETS, f"seeds=[{', '.join(map(str, seeds))}]"]:
        args += ["--set", assignment]
    if runs_per_gpu:
        args += ["--runs-per-gpu", str(runs_per_gpu)]
    failure = None
    try:
        ctx.crmlab(name, *args)
    except StepFailed as exc:
        failure = exc
    expected = 2 * len(seeds)
    placements = []
    for folder in run_folders(runs):
        record = read_json(folder / "placement.json") if (folder / "placement.json").exists() else None
        placements.append({"run": folder.name, "finished": (folder / "result.json").exists(), "placement": record})
    finished = sum(p["finished"] for p in placements)
    workers = sorted({p["placement"]["pid"] for p in placements if p["placement"]})
    values = {
        "command": shown(args),
        "runs_expected": expected,
        "runs_finished": finished,
        "workers_seen": len(workers),
        "placements": placements,
    }
    if failure is not None:
        raise StepFailed(str(failure), values, failure.log)
    problems = [f"{finished} of {expected} runs finished"] if finished != expected else []
    problems += [f"run {p['run']} has no placement.json" for p in placements if p["placement"] is None]
    if runs_per_gpu:
        problems += [
            f"run {p['run']}: its worker saw no GPU (devices {p['placement']['devices']})"
            for p in placements
            if p["placement"] and not any("cpu" not in d.lower() for d in p["placement"]["devices"])
        ]
    if problems:
        raise StepFailed("; ".join(problems), values, ctx.tail(name))
    seen = sorted({placement_text(p["placement"]) for p in placements})
    return values, f"{finished}/{expected} runs finished by {len(workers)} workers; seen: {', '.join(seen)}"


def placement_text(record: dict[str, Any]) -> str:
    """``cuda:0 (share 4, memory 0.225)`` or ``cpu:0``: what one worker saw."""
    devices = ",".join(record["devices"])
    if record.get("share", 1) > 1:
        return f"{devices} (share {record['share']}, memory {record['memory_fraction']})"
    return devices


# ---- step 4 -------------------------------------------------------------------------------------------------------


def kill_and_resume(ctx: Context) -> tuple[dict[str, Any], str]:
    """Step 4: ``crmlab train`` SIGKILLed after its first committed epoch, then the same command again."""
    runs = ctx.work / "4-kill"
    args = ["-m", "crmlab.cli", "train", str(FIXTURES / "tiny_train.yaml"), "--backend", "jax", "--no-mlflow"]
    args += ["--runs-dir", str(runs), "--verbose", "2", "--set", f"recipe.stages.0.epochs={ctx.sizes.kill_epochs}"]
    args += ["--set", "recipe.stages.1.epochs=1"]
    env = ctx.shared_gpu(0.1)
    started = time.monotonic()
    proc = ctx.start("4-train-killed", args, env)
    state_file = None
    try:
        while state_file is None:
            if proc.poll() is not None:
                raise StepFailed(
                    f"the first train exited with {describe_exit(proc.returncode)} before a checkpoint was seen",
                    log=ctx.tail("4-train-killed"),
                )
            if ctx.left() <= 0:
                raise StepFailed(f"timed out waiting for the first checkpoint (the {ctx.budget_s:.0f} s budget)")
            state_file = next((p for p in runs.glob("*/state.json") if committed_epochs(p) > 0), None)
            time.sleep(0.05)
    finally:
        kill_group(proc)
    killed_after = time.monotonic() - started
    before = read_json(state_file)  # read again: an epoch may have been committed before the kill landed
    values: dict[str, Any] = {
        "command": shown(args),
        "killed_after_s": round(killed_after, 2),
        "killed_by": describe_exit(proc.returncode),
        "killed_at": {"stage": before["stage"], "epoch": before["epoch"]},
        "epochs_before_kill": len(before["history"]),
    }
    if before.get("finished"):
        raise StepFailed("the run had finished before the kill landed", values)
    resumed_at = time.monotonic()
    ctx.run("4-train-resumed", args, env)
    values["resume_s"] = round(time.monotonic() - resumed_at, 2)
    run_dir = state_file.parent
    after = read_json(run_dir / "state.json")
    history = read_json(run_dir / "result.json")["history"] if (run_dir / "result.json").exists() else []
    kept = [h["time"] for h in history[: len(before["history"])]] == [h["time"] for h in before["history"]]
    values.update(
        epochs_after_resume=len(history) - len(before["history"]),
        epochs_total=len(history),
        resumed=kept and values["epochs_before_kill"] > 0,
        finished=bool(after.get("finished")) and bool(history),
    )
    if not values["finished"]:
        raise StepFailed("the resumed run did not finish", values, ctx.tail("4-train-resumed"))
    if not values["resumed"]:
        raise StepFailed("the run trained from its first epoch again instead of resuming", values)
    summary = (
        f"killed after {values['epochs_before_kill']} epoch(s) ({values['killed_after_s']} s), resumed:"
        f" {values['epochs_after_resume']} more, finished"
    )
    return values, summary


def committed_epochs(state_file: Path) -> int:
    """Epochs a run has committed (``state.json``'s history; it is replaced atomically); 0 if unreadable."""
    try:
        return len(read_json(state_file).get("history", []))
    except (OSError, ValueError):
        return 0


# ---- step 5 -------------------------------------------------------------------------------------------------------


def accuracy(ctx: Context) -> tuple[dict[str, Any], str]:
    """Step 5: the same short training in float32 and mixed_bfloat16, side by side; test Pearson r of both."""
    s = ctx.sizes
    procs, commands = {}, {}
    for precision in PRECISIONS:
        args = ["-m", "crmlab.cli", "train", str(s.accuracy_study), "--backend", "jax", "--no-mlflow"]
        args += ["--runs-dir", str(ctx.work / f"5-{precision}"), "--verbose", "2"]
        for assignment in [*s.accuracy_sets, f"recipe.precision={precision}"]:
            args += ["--set", assignment]
        procs[precision] = (ctx.start(f"5-train-{precision}", args, ctx.shared_gpu(0.4)), time.monotonic())
        commands[precision] = shown(args)
    values: dict[str, Any] = {"commands": commands}
    errors, logs = [], []
    for precision, (proc, started) in procs.items():
        name = f"5-train-{precision}"
        try:
            ctx.finish(name, proc)
        except StepFailed as exc:
            errors.append(f"{precision}: {exc}")
            logs += exc.log
            continue
        (folder,) = run_folders(ctx.work / f"5-{precision}")
        result = read_json(folder / "result.json")
        values[precision] = {
            "seconds": round(time.monotonic() - started, 1),
            "epochs": len(result["history"]),
            "test_pearson_r": {t: round(m["pearson_r"], 4) for t, m in result["test_metrics"].items()},
        }
    if errors:
        for proc, _ in procs.values():
            kill_group(proc)
        raise StepFailed("; ".join(errors), values, logs[-LOG_TAIL:])
    f32, bf16 = (values[p]["test_pearson_r"] for p in PRECISIONS)
    values["bf16_minus_float32"] = {t: round(bf16[t] - f32[t], 4) for t in f32}
    summary = "; ".join(f"{t} r {f32[t]:.3f} / {bf16[t]:.3f} ({values['bf16_minus_float32'][t]:+.3f})" for t in f32)
    return values, f"float32 / bf16: {summary}"


# ---- the check ----------------------------------------------------------------------------------------------------

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
    }


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
