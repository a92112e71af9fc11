"""``bench/device_check.py --quick``: every step of the GPU check runs on the CPU at toy sizes, with TensorFlow and
MLflow blocked in every process (the GPU image has neither), and records sane values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKER = "import sys\nsys.modules['tensorflow'] = None\nsys.modules['mlflow'] = None\n"
"""A ``sitecustomize`` module: importing either package fails in every Python process that starts with it on
``PYTHONPATH`` (the check's commands and their workers inherit it), as if it were not installed."""


def blocked_env(folder: Path) -> dict[str, str]:
    """The environment with :data:`BLOCKER` first on ``PYTHONPATH``."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join(p for p in [str(folder), os.environ.get("PYTHONPATH", "")] if p)
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}


def failures(doc: dict[str, Any]) -> str:
    return "\n".join(
        f"step {s['id']}: {s['error']}\n  " + "\n  ".join(s["log_tail"])
        for s in doc["steps"]
        if s["status"] == "failed"
    )


def test_device_check_quick_runs_every_step_without_tensorflow_or_mlflow(tmp_path: Path) -> None:
    env = blocked_env(tmp_path / "blocked")
    for module in ("tensorflow", "mlflow"):  # the blocker works
        probe = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "halted" in probe.stderr
    out = tmp_path / "x.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/device_check.py"), "--quick", "--out", str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    doc = json.loads(out.read_text())
    assert proc.returncode == 0 and doc["failed"] == [], failures(doc) + proc.stderr[-2000:]
    assert doc["quick"] is True and doc["machine"]["cpu_only"] is True and doc["machine"]["backend"] == "jax"
    assert doc["machine"]["jax_compilation_cache_entries"] > 0  # the processes' shared compilation cache was used
    steps = {s["id"]: s for s in doc["steps"]}
    assert list(steps) == ["1", "2", "3a", "3b", "4", "5"]
    for sid, step in steps.items():
        if sid != "3b":
            assert step["status"] == "ok" and step["seconds"] > 0 and step["summary"], sid

    bench = steps["1"]["values"]  # crmlab bench, both precisions
    for precision in ("float32", "mixed_bfloat16"):
        cell = bench[precision]
        assert cell["ms_per_step"] > 0 and cell["error"] == ""
        assert cell["seq_per_s"] == pytest.approx(64_000 / cell["ms_per_step"], rel=0.02)
    assert bench["bf16_speedup"] == pytest.approx(
        bench["mixed_bfloat16"]["seq_per_s"] / bench["float32"]["seq_per_s"], abs=0.002
    )

    fit = steps["2"]["values"]  # the runner's loop against step 1's bare step
    assert fit["step_from"] == "step 1" and fit["step_seq_per_s"] == pytest.approx(
        bench["float32"]["seq_per_s"], abs=0.1
    )
    assert fit["first_epoch_s"] > 0 and fit["epoch_s"] > 0 and isinstance(fit["stage_recompile_s"], float)
    assert fit["loop_seq_per_s"] == pytest.approx(4 * 64 / fit["epoch_s"], rel=0.02)
    assert fit["loop_vs_step"] == pytest.approx(fit["loop_seq_per_s"] / fit["step_seq_per_s"], abs=0.002)

    ablate = steps["3a"]["values"]  # --jobs 2: both runs finished, each placement recorded by its worker
    assert ablate["runs_expected"] == ablate["runs_finished"] == 2 and 1 <= ablate["workers_seen"] <= 2
    assert "--jobs 2" in ablate["command"] and "--no-mlflow" in ablate["command"]
    for run in ablate["placements"]:
        placement = run["placement"]
        assert run["finished"] and placement["devices"] == ["cpu:0"] and placement["gpus"] == []
        assert placement["backend"] == "jax" and placement["index"] in (0, 1)
    assert steps["3b"]["status"] == "skipped" and "no GPU" in steps["3b"]["summary"]  # not faked on a CPU

    kill = steps["4"]["values"]  # SIGKILLed after a committed epoch, resumed without retraining it, finished
    assert kill["killed_by"] == "signal SIGKILL" and kill["epochs_before_kill"] > 0
    assert kill["resumed"] is True and kill["finished"] is True
    assert kill["epochs_before_kill"] + kill["epochs_after_resume"] == kill["epochs_total"] == 3 + 1

    accuracy = steps["5"]["values"]  # the same run in float32 and bf16
    f32, bf16 = accuracy["float32"]["test_pearson_r"], accuracy["mixed_bfloat16"]["test_pearson_r"]
    assert set(f32) == set(bf16) == {"native", "native_github"}
    for name in f32:
        assert -1 <= f32[name] <= 1 and -1 <= bf16[name] <= 1
        assert accuracy["bf16_minus_float32"][name] == pytest.approx(bf16[name] - f32[name], abs=2e-4)
    assert accuracy["float32"]["epochs"] == accuracy["mixed_bfloat16"]["epochs"] == 2

    table = proc.stdout.splitlines()  # the markdown table, one row per step
    head = table.index("| step | check | status | seconds | result |")
    assert [row.split("|")[1].strip() for row in table[head + 2 : head + 8]] == list(steps)
    assert table[-1] == f"results: {out}"


def test_a_failed_step_is_recorded_and_the_next_one_still_runs(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    args = ["--quick", "--only", "1", "2", "--budget", "1", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/device_check.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    steps = {s["id"]: s for s in doc["steps"]}
    assert doc["failed"] == ["1", "2"]
    assert steps["1"]["status"] == "failed" and steps["1"]["error"] == "1-bench: timed out (the 1 s budget is spent)"
    assert steps["2"]["error"] == "not started: the 1 s budget is spent"
    assert all(steps[s]["summary"] == "skipped: not chosen (--only)" for s in ("3a", "3b", "4", "5"))
    assert "| 1 | tiny graph step time" in proc.stdout and "error: not started" in proc.stdout


def test_without_a_gpu_the_full_check_stops_at_once(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/device_check.py"), "--out", str(out)],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines() == [
        "device_check: no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi); --quick checks the CPU at toy sizes"
    ]
