"""Multi-process data parallelism on JAX (``strategy: multi_worker``): two real ``crmlab train`` processes on CPU.

The two processes join through a loopback coordinator on a free port (Keras' ``KERAS_DISTRIBUTION_*`` variables,
gloo collectives) and train one run: each feeds half of every global batch. As in ``test_distribute.py`` the graph
has no BatchNorm and no dropout, the learning rate is constant and unscaled, and the per-replica batch is halved on
the 2 devices (one per process), so the global batch (64), its order and its reverse-complemented rows are the
single-process run's: the results agree up to float32 rounding (observed: predictions within 1e-6 of about 11,
identical losses). The exported model averages both strands, so the gathered predictions go through the averaging
head.

Only the chief (process 0) writes: its run folder holds exactly what the single-process run's holds, the other
process's working folder and scratch folder are empty afterwards, and both print the chief's result.

Cost: about 8 s of imports per process, 7 s to join, and a compile of JAX's cross-process equality check for each
variable shape the model places on the devices; the graph is the smallest there is (one-hot, one dense layer).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from crmlab.registry import SpecError
from crmlab.runners.training import Batches

ROOT = Path(__file__).resolve().parents[3]
STUDY = ROOT / "tests" / "fixtures" / "studies" / "tiny_train.yaml"
LIMIT_S = 240  # hard stop per process

GRAPH = """\
name: mp_check
description: no BatchNorm, no dropout, so 1 process and 2 compute the same function
inputs:
  seq: {shape: [112], dtype: int32}
nodes:
  onehot: {block: onehot_input, inputs: [seq]}
  head: {block: mlp_head, inputs: [onehot], params: {units: [4], dropout: 0.0}}
outputs: [head]
"""

RECIPE = (
    "recipe={seed: 0, batch_size: 64, epochs: 2, strategy: none, lr_scaling: none,"
    " reverse_complement: true, average_reverse_complement: true,"
    " schedule: {kind: constant, peak: 3.0e-3},"
    " early_stopping: {monitor: val_loss, patience: 10, restore_best: false},"
    " stages: [{name: finetune, data: random_library}]}"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_DISTRIBUTION_", "MLFLOW_"))}
    env.update(
        KERAS_BACKEND="jax",
        CUDA_VISIBLE_DEVICES="",
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="2",
        CRMLAB_CACHE=str(tmp / "token-cache"),
    )
    return env


def _command(graph: Path, runs: Path, *extra: str) -> list[str]:
    study = ["train", str(STUDY), "--backend", "jax", "--no-mlflow", "--runs-dir", str(runs), "--verbose", "0"]
    sets = [f"graph={graph}", RECIPE, *extra]
    return [sys.executable, "-m", "crmlab.cli", *study, *[a for s in sets for a in ("--set", s)]]


def _run_folder(runs: Path) -> Path:
    (folder,) = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("_")]
    return folder


def test_two_processes_match_one_and_only_the_chief_writes(tmp_path: Path) -> None:
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install -e '.[dev]')")
    graph = tmp_path / "graph.yaml"
    graph.write_text(GRAPH)
    env = _environment(tmp_path)
    started = time.perf_counter()
    joined = {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{_free_port()}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
    }
    multi = ["recipe.strategy=multi_worker", "recipe.batch_size=32"]  # 2 devices: the same global batch, 64
    workers = []
    for index in range(2):
        (tmp_path / f"cwd{index}").mkdir()
        (tmp_path / f"scratch{index}").mkdir()
        own = {
            **env,
            **joined,
            "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
            "TMPDIR": str(tmp_path / f"scratch{index}"),
        }
        workers.append(
            subprocess.Popen(
                _command(graph, tmp_path / "runs-multi", *multi),
                cwd=tmp_path / f"cwd{index}",
                env=own,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for proc in workers:
        try:
            out, err = proc.communicate(timeout=LIMIT_S)
        except subprocess.TimeoutExpired:
            for p in workers:
                p.kill()
            raise
        assert proc.returncode == 0, err[-4000:]
        outputs.append("".join(line for line in out.splitlines(keepends=True) if not line.startswith("[Gloo]")))
    two = time.perf_counter() - started
    single = subprocess.run(  # after the pair: three processes on two cores slow every one of them
        _command(graph, tmp_path / "runs-single"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    assert single.returncode == 0, single.stderr[-4000:]
    seconds = time.perf_counter() - started

    chief_out, other_out = outputs
    assert chief_out == other_out  # both return the chief's result
    for index in range(2):  # the other process wrote nothing outside the runs folder, its scratch copy is gone
        assert not list((tmp_path / f"cwd{index}").iterdir())
        assert not list((tmp_path / f"scratch{index}").iterdir())
    reference, trained = _run_folder(tmp_path / "runs-single"), _run_folder(tmp_path / "runs-multi")
    names = sorted(p.name for p in trained.iterdir())
    assert names == sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in (tmp_path / "runs-multi").iterdir()) == sorted([trained.name, "_manifest.jsonl"])
    state = json.loads((trained / "state.json").read_text())
    assert (state["devices"], state["processes"], state["global_batch"]) == (2, 2, {"finetune": 64})
    before = json.loads((reference / "state.json").read_text())
    assert (before["devices"], before["processes"], before["global_batch"]) == (1, 1, {"finetune": 64})

    a, b = (json.loads((f / "result.json").read_text()) for f in (reference, trained))
    diffs = {}
    for name in ("native", "native_github"):
        p, q = (np.load(f / f"predictions_{name}.npy") for f in (reference, trained))
        diffs[name] = float(np.abs(p - q).max())
        assert diffs[name] <= 1e-4 * float(np.abs(p).max()), (name, diffs[name])
        for key in ("pearson_r", "r2", "mse"):
            assert b["test_metrics"][name][key] == pytest.approx(a["test_metrics"][name][key], abs=1e-4)
    np.testing.assert_allclose([h["val_loss"] for h in b["history"]], [h["val_loss"] for h in a["history"]], 1e-5)
    for key, value in a["validation"].items():
        assert b["validation"][key] == pytest.approx(value, abs=1e-5), key
    print(
        f"multi_worker, 2 processes vs 1: max |prediction diff| {diffs}; 2 processes {two:.1f} s, all {seconds:.1f} s"
    )


def test_each_process_feeds_its_slice_of_every_batch() -> None:
    tokens = (np.arange(10 * 3) % 5).astype(np.uint8).reshape(10, 3)
    values = np.arange(10, dtype="float32")
    whole = Batches(tokens, values, 4, seed=1, reverse_complement=True)
    parts = [Batches(tokens, values, 4, seed=1, reverse_complement=True, part=(i, 2)) for i in range(2)]
    for batch in range(len(whole)):
        x, y = whole[batch]
        pieces = [p[batch] for p in parts]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in pieces]), x)
        np.testing.assert_array_equal(np.concatenate([y for _, y in pieces]), y)
    with pytest.raises(ValueError, match="does not split"):
        Batches(tokens, values, 5, seed=1, part=(0, 2))


@pytest.mark.parametrize(
    "variables, message",
    [
        ({}, "set KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID"),
        ({"JOB_ADDRESSES": "h:1", "NUM_PROCESSES": "2", "PROCESS_ID": "2"}, "PROCESS_ID=2 is not in 0..1"),
        ({"JOB_ADDRESSES": "h:1,h:2,h:3", "NUM_PROCESSES": "2", "PROCESS_ID": "0"}, "lists 3 addresses for 2"),
        ({"JOB_ADDRESSES": "h", "NUM_PROCESSES": "2", "PROCESS_ID": "0"}, "needs host:port"),
        ({"JOB_ADDRESSES": "h:1", "NUM_PROCESSES": "two", "PROCESS_ID": "0"}, "must be whole numbers"),
    ],
)
def test_missing_or_inconsistent_settings_are_one_line_errors(
    variables: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmlab.runners.parallel import _jax_processes as processes

    for name in ("JOB_ADDRESSES", "NUM_PROCESSES", "PROCESS_ID"):
        monkeypatch.delenv(f"KERAS_DISTRIBUTION_{name}", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(f"KERAS_DISTRIBUTION_{name}", value)
    with pytest.raises(SpecError, match=message) as info:
        processes._settings()
    assert str(info.value).startswith("recipe.strategy: multi_worker: ") and "\n" not in str(info.value)


def test_a_run_records_its_devices_processes_and_global_batch_and_refuses_another_device_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmlab.registry import CrmlabError
    from crmlab.runners.parallel import ALLOW_DEVICE_CHANGE, record_devices
    from crmlab.runners.rundir import CheckpointState
    from crmlab.runners.studyfile import Recipe

    recipe = Recipe.model_validate(
        {"batch_size": 32, "stages": [{"name": "pre", "data": "a", "batch_size": 16}, {"name": "fine", "data": "b"}]}
    )
    state = CheckpointState(tmp_path)
    tags = record_devices(state, recipe, 2)
    assert tags == {"crmlab.devices": "2", "crmlab.processes": "1", "crmlab.global_batch": "pre=32,fine=64"}
    assert (state["devices"], state["processes"], state["global_batch"]) == (2, 1, {"pre": 32, "fine": 64})
    monkeypatch.delenv(ALLOW_DEVICE_CHANGE, raising=False)
    with pytest.raises(CrmlabError, match="started on 2 device") as info:
        record_devices(state, recipe, 4)
    assert "\n" not in str(info.value)
    monkeypatch.setenv(ALLOW_DEVICE_CHANGE, "1")
    assert record_devices(state, recipe, 4)["crmlab.global_batch"] == "pre=64,fine=128"
