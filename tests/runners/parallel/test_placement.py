"""Placement of worker processes on GPUs (faked device lists; no GPU needed) and GPU detection without CUDA."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from crmlab.registry import CrmlabError
from crmlab.runners.parallel import Slot, detect_gpus, placement_text, plan_slots
from crmlab.runners.parallel._placement import PLACEMENT_ENV, exclusive_slots, hide_accelerators


def test_one_gpu_two_jobs_share_it_with_half_the_memory_each() -> None:
    slots = plan_slots(["0"], jobs=2)
    assert [(s.gpus, s.share) for s in slots] == [(("0",), 2), (("0",), 2)]
    env = slots[1].env({})
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.450"
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert json.loads(env[PLACEMENT_ENV]) == {"index": 1, "gpus": ["0"], "share": 2}
    assert slots[0].describe() == "worker 0: GPU 0 (shared by 2, 45% of its memory)"


def test_four_gpus_one_each_round_robin_and_no_memory_cap_when_exclusive() -> None:
    slots = plan_slots(["0", "1", "2", "3"], jobs=None)
    assert [s.gpus for s in slots] == [("0",), ("1",), ("2",), ("3",)]
    assert all(s.share == 1 and s.memory_fraction is None for s in slots)
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in slots[0].env({})
    assert [s.gpus for s in plan_slots(["0", "1", "2", "3"], jobs=2)] == [("0",), ("1",)]


def test_more_jobs_than_gpus_share_round_robin_with_the_exact_count_per_gpu() -> None:
    slots = plan_slots(["0", "1"], jobs=5)
    assert [s.gpus for s in slots] == [("0",), ("1",), ("0",), ("1",), ("0",)]
    assert [s.share for s in slots] == [3, 2, 3, 2, 3]
    assert slots[0].memory_fraction == pytest.approx(0.3)


def test_gpus_per_run_groups_gpus_and_runs_per_gpu_sets_the_default_jobs() -> None:
    slots = plan_slots(["0", "1", "2", "3"], jobs=None, gpus_per_run=2, runs_per_gpu=2)
    assert [s.gpus for s in slots] == [("0", "1"), ("2", "3"), ("0", "1"), ("2", "3")]
    assert slots[0].env({})["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert [s.gpus for s in exclusive_slots(slots)] == [("0", "1"), ("2", "3")]


def test_cpu_only_machines_get_cpu_slots_and_gpu_options_are_one_line_errors() -> None:
    assert plan_slots([], jobs=2) == [Slot(0), Slot(1)]
    assert plan_slots([], jobs=None) == [Slot(0)]
    assert "CUDA_VISIBLE_DEVICES" not in Slot(0).env({})
    assert exclusive_slots(plan_slots([], jobs=3)) == [Slot(0)]
    with pytest.raises(CrmlabError, match=r"^--gpus-per-run 2: no GPU is visible"):
        plan_slots([], jobs=2, gpus_per_run=2)
    with pytest.raises(CrmlabError, match=r"^--gpus-per-run 3: only 2 GPU\(s\) visible"):
        plan_slots(["0", "1"], jobs=1, gpus_per_run=3)
    with pytest.raises(CrmlabError, match=r"^--jobs 5 with --runs-per-gpu 2: 2 GPU group\(s\) of 1 hold at most 4"):
        plan_slots(["0", "1"], jobs=5, runs_per_gpu=2)


def _fake_nvidia_smi(folder: Path, lines: str) -> str:
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return f"{folder}{os.pathsep}/usr/bin:/bin"


def test_detection_respects_cuda_visible_devices_then_asks_nvidia_smi(tmp_path: Path) -> None:
    path = _fake_nvidia_smi(tmp_path, "0\\n1\\n2\\n")
    assert detect_gpus({"PATH": path}) == ["0", "1", "2"]
    assert detect_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": "2,0"}) == ["2", "0"]
    assert detect_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": ""}) == []
    assert detect_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert detect_gpus({"PATH": str(tmp_path / "none")}) == []


def test_the_parent_hides_accelerators_and_its_workers_get_the_users_devices_back(tmp_path: Path) -> None:
    env = {"PATH": _fake_nvidia_smi(tmp_path, "0\\n1\\n"), "CUDA_VISIBLE_DEVICES": "1", "JAX_PLATFORMS": "cuda"}
    gpus = detect_gpus(env)
    slots = plan_slots(gpus, jobs=2)
    hide_accelerators(env)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["JAX_PLATFORMS"] == "cpu"
    assert detect_gpus(env) == ["1"], "detection after hiding still sees the user's GPUs"
    worker = {**env, **{k: v for k, v in slots[0].env(env).items() if v is not None}}
    for k, v in slots[0].env(env).items():
        if v is None:
            worker.pop(k, None)
    assert worker["CUDA_VISIBLE_DEVICES"] == "1" and worker["JAX_PLATFORMS"] == "cuda"
    assert placement_text(slots, gpus).endswith("this process: CPU only")


def test_hiding_for_a_command_run_in_process_leaves_the_environment_as_it_was() -> None:
    from crmlab.runners.parallel import accelerators_hidden

    env = {"CUDA_VISIBLE_DEVICES": "3"}
    with accelerators_hidden(env):
        assert env["CUDA_VISIBLE_DEVICES"] == "" and env["JAX_PLATFORMS"] == "cpu"
        hide_accelerators(env)  # hidden again (a nested command): the user's value stays recorded
        assert Slot(0, ("3",)).env(env)["CUDA_VISIBLE_DEVICES"] == "3"
    assert env == {"CUDA_VISIBLE_DEVICES": "3"}
