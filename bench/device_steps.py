"""The steps of ``bench/device_check.py``, one function each; every one runs its commands through a
:class:`device_context.Context` and returns its values and a one-line summary, or raises
:class:`device_context.StepFailed` with what it measured before it failed.

1. :func:`step_time`: ``crmlab bench`` in float32 and mixed_bfloat16;
2. :func:`fit_loop`: the runner's loop against the bare step, two stages, in a child process (:func:`fit_child`,
   which reuses ``fit_throughput.loop_rate`` and ``fit_throughput.step_rate``);
3. :func:`ablation`: ``crmlab ablate`` of the tiny test study with ``--jobs`` (and ``--runs-per-gpu``);
4. :func:`kill_and_resume`: ``crmlab train`` SIGKILLed after a committed epoch, then resumed;
5. :func:`accuracy`: the same short training in float32 and mixed_bfloat16, test Pearson r of both.

This module never imports Keras or a backend (only :func:`fit_child`, in its own process, does).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from device_context import (
    FIXTURES,
    LOG_TAIL,
    PRECISIONS,
    ROOT,
    Context,
    StepFailed,
    describe_exit,
    kill_group,
    number,
    read_json,
    run_folders,
    shown,
)

__all__ = [
    "ABLATION_SETS",
    "ablation",
    "accuracy",
    "committed_epochs",
    "fit_child",
    "fit_loop",
    "kill_and_resume",
    "placement_text",
    "step_time",
]

ABLATION_SETS = ["variants={}", "leave_one_out=[transformer]"]
"""``--set`` overrides of ``tiny_ablation.yaml``: two looks (canonical, no_transformer) per seed."""


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
    ctx.run("2-fit", [str(ROOT / "bench/device_check.py"), "--fit-child", json.dumps(request)])
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
    import fit_throughput  # imports Keras: only ever in the child (bench/ is on sys.path, as for every script here)

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
