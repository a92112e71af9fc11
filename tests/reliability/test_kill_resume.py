"""SIGKILL ``crmlab train`` and ``crmlab ablate`` (real processes) at chosen and random points, run the same command
again, and check that nothing was lost or duplicated: every run complete, each epoch in the history once, at most
one epoch computed again per kill, one MLflow run per piece of work and none left RUNNING.

Kill points are named in :mod:`tests.reliability.killpoint`. The default run survives three kills (two of one
``train`` run, one in ``ablate``); ``pytest -m slow`` kills each command at every point, each time followed by a kill
at a random moment of the resumed run. Killing ``crmlab ablate --jobs 2`` ends its pool's workers too."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability.workspace import ROOT, make_workspace, mlflow_runs

LIMIT_S = 600


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CRMLAB_RUNS")}
    return {**env, "PYTHONPATH": str(ROOT), "CRMLAB_CACHE": str(root / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}


def _command(root: Path, args: list[str], point: str = "none", n: int = 1) -> list[str]:
    trace = root / "trace.txt"
    common = ["--runs-dir", str(root / "runs"), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"]
    return [sys.executable, "-m", "tests.reliability.killpoint", point, str(n), str(trace), "--", *args, *common]


def run_killed_at(root: Path, args: list[str], point: str, n: int) -> None:
    """Run until the kill point; the process must die by SIGKILL there."""
    proc = subprocess.run(
        _command(root, args, point, n), cwd=root, env=_env(root), capture_output=True, text=True, timeout=LIMIT_S
    )
    assert proc.returncode == -signal.SIGKILL, (
        f"not killed at {point} #{n}: rc {proc.returncode}\n{proc.stderr[-3000:]}"
    )


def run_killed_after(root: Path, args: list[str], rng: random.Random, most_s: float) -> bool:
    """Kill at a random moment once training has begun (``False`` if the run finished first)."""
    trace = root / "trace.txt"
    begun = trace.read_text().count("\n") if trace.exists() else 0
    proc = subprocess.Popen(
        _command(root, args), cwd=root, env=_env(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + LIMIT_S
    while proc.poll() is None and time.monotonic() < deadline:
        if trace.exists() and trace.read_text().count("\n") > begun:
            time.sleep(rng.uniform(0, most_s))
            break
        time.sleep(0.1)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return True


def run_to_the_end(root: Path, args: list[str]) -> str:
    proc = subprocess.run(
        _command(root, args), cwd=root, env=_env(root), capture_output=True, text=True, timeout=LIMIT_S
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def epochs_begun(root: Path) -> Counter[str]:
    trace = root / "trace.txt"
    return Counter(trace.read_text().splitlines() if trace.exists() else [])


def check_recomputation(root: Path, kills: int) -> None:
    """At most one epoch computed again per kill."""
    begun = epochs_begun(root)
    again = sum(n - 1 for n in begun.values())
    assert again <= kills, f"{again} epochs recomputed after {kills} kills: {begun}"


TRAIN_ARGS = ["train", "studies/train.yaml", "--verbose", "0", "--set", "recipe.stages.0.epochs=3"]
TRAIN_EPOCHS = [("pretrain", 1), ("pretrain", 2), ("pretrain", 3), ("finetune", 1), ("finetune", 2)]


def check_train_complete(root: Path, kills: int) -> None:
    results = list((root / "runs").glob("*/result.json"))
    assert len(results) == 1, results
    result = json.loads(results[0].read_text())
    assert [(h["stage"], h["epoch"]) for h in result["history"]] == TRAIN_EPOCHS
    runs = mlflow_runs(root / "mlflow.db")
    assert [r.info.status for r in runs] == ["FINISHED"], [(r.info.run_id, r.info.status) for r in runs]
    assert runs[0].info.run_id == result["mlflow_run_id"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    for stage in ("pretrain", "finetune"):
        steps = [m.step for m in client.get_metric_history(result["mlflow_run_id"], f"{stage}.val_r2")]
        expected = [epoch for name, epoch in TRAIN_EPOCHS if name == stage]
        assert sorted(steps) == expected, f"every {stage} epoch logged to MLflow exactly once, at its own step"
    assert "test.native.pearson_r" in runs[0].data.metrics
    check_recomputation(root, kills)


def ablate_args(seeds: list[int]) -> list[str]:
    """The tiny ablation: canonical and no_transformer, one pretraining and one fine-tuning epoch per run."""
    return [
        "ablate",
        "studies/ablation.yaml",
        "--set",
        "variants={}",
        "--set",
        "leave_one_out=[transformer]",
        "--set",
        f"seeds={seeds}",
    ]


def check_ablation_complete(root: Path, kills: int, seeds: list[int]) -> None:
    expected = {(v, str(s)) for v in ("canonical", "no_transformer") for s in seeds}
    finished = [json.loads(p.read_text()) for p in (root / "runs").glob("*/result.json")]
    assert len(finished) == len(expected)
    for r in finished:
        assert [(h["stage"], h["epoch"]) for h in r["history"]] == [("pretrain", 1), ("finetune", 1)]
    runs = mlflow_runs(root / "mlflow.db")
    parents = [r for r in runs if r.data.tags.get("crmlab.kind") == "ablation"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == len(parents) + len(children), "stray MLflow runs"
    assert [p.info.status for p in parents] == ["FINISHED"]
    labels = sorted((c.data.tags["crmlab.variant"], c.data.tags["crmlab.seed"]) for c in children)
    assert labels == sorted(expected), "one MLflow run per variant x seed, none duplicated"
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.info.run_id for c in children} == {r["mlflow_run_id"] for r in finished}
    check_recomputation(root, kills)


def test_train_survives_a_kill_while_a_checkpoint_is_committed_then_one_in_its_clean_up(workspace: Path) -> None:
    """Killed mid-training, resumed and killed again as it cleans up: the same command then ends the clean-up and
    the run is whole, with one MLflow run (``crmlab train``'s resume after SIGKILL)."""
    run_killed_at(workspace, TRAIN_ARGS, "state-commit", 4)  # the second epoch's checkpoint, written, not committed
    run_killed_at(workspace, TRAIN_ARGS, "clean-up", 1)  # resumed and finished, one file of its checkpoint deleted
    (run,) = [p.parent for p in (workspace / "runs").glob("*/state.json")]
    assert json.loads((run / "state.json").read_text())["finished"] and list(run.glob("ckpt-*/*"))
    run_to_the_end(workspace, TRAIN_ARGS)
    check_train_complete(workspace, kills=2)
    assert not list(run.glob("ckpt-*")), "the next reading of the finished run ends its clean-up"


def test_ablate_survives_a_kill_inside_its_second_run(workspace: Path) -> None:
    # 12 + 6 batches per run (pretrain, finetune; plus read-ahead): batch 25 falls in the second run's pretraining
    run_killed_at(workspace, ablate_args([0]), "batch", 25)
    out = run_to_the_end(workspace, ablate_args([0]))
    assert "report:" in out
    check_ablation_complete(workspace, kills=1, seeds=[0])


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if int(parent) == pid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def test_killing_ablate_with_jobs_ends_its_workers(workspace: Path) -> None:
    """SIGKILL the parent of ``--jobs 2``: its pool workers end too instead of training the queued runs."""
    proc = subprocess.Popen(
        _command(workspace, [*ablate_args([0, 1]), "--jobs", "2"]),
        cwd=workspace,
        env=_env(workspace),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(workers := _children(proc.pid)) < 3 and time.monotonic() < deadline:  # 2 workers + the resource tracker
        time.sleep(0.5)
    assert proc.poll() is None and len(workers) >= 2, "the pool's workers did not start"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while (alive := [w for w in workers if _state(w) != "Z"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive, f"workers {alive} kept running after their parent was killed"


def _state(pid: int) -> str:
    """A process's state letter from ``/proc`` (``Z`` also when it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


TRAIN_POINTS = [
    ("create-run", 1),
    ("batch", 5),
    ("state-commit", 2),
    ("state-committed", 6),
    ("mlflow-metrics", 2),
    ("stage-store", 1),
    ("batch", 40),
    ("outputs", 1),
    ("clean-up", 1),
]
ABLATE_POINTS = [
    ("create-run", 1),
    ("create-run", 2),
    ("stage-store", 2),
    ("batch", 25),
    ("outputs", 1),
    ("clean-up", 2),
]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "n"), TRAIN_POINTS, ids=[f"{p}-{n}" for p, n in TRAIN_POINTS])
def test_train_survives_a_kill_at_every_point_then_at_a_random_moment(workspace: Path, point: str, n: int) -> None:
    run_killed_at(workspace, TRAIN_ARGS, point, n)
    kills = 1 + run_killed_after(workspace, TRAIN_ARGS, random.Random(f"{point}{n}"), most_s=8.0)
    run_to_the_end(workspace, TRAIN_ARGS)
    check_train_complete(workspace, kills)


@pytest.mark.slow
@pytest.mark.parametrize(("point", "n"), ABLATE_POINTS, ids=[f"{p}-{n}" for p, n in ABLATE_POINTS])
def test_ablate_survives_a_kill_at_every_point_then_at_a_random_moment(workspace: Path, point: str, n: int) -> None:
    run_killed_at(workspace, ablate_args([0]), point, n)
    kills = 1 + run_killed_after(workspace, ablate_args([0]), random.Random(f"{point}{n}"), most_s=10.0)
    run_to_the_end(workspace, ablate_args([0]))
    check_ablation_complete(workspace, kills, seeds=[0])


PROBE = """
import json, os, sys
seen = {}

class Probe:
    def find_spec(self, name, path=None, target=None):
        if name in ("keras", "tensorflow", "jax") and name not in seen:
            seen[name] = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS")}
        return None

sys.meta_path.insert(0, Probe())
from crmlab.cli import main
rc = main(sys.argv[1:])
print("PROBE " + json.dumps(seen), flush=True)
sys.exit(rc)
"""


def test_a_killed_worker_is_its_runs_failure_and_the_parent_keeps_off_the_gpus(workspace: Path, tmp_path: Path) -> None:
    """``--jobs 2`` on a machine that shows two GPUs (a fake ``nvidia-smi``): the placement is printed, each worker
    records its GPU, the parent imports its backend with every GPU hidden, and SIGKILL of the worker training
    no_transformer fails that run with one line while canonical finishes and is reported."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**_env(workspace), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for name in ("CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS", "CRMLAB_HIDDEN_ENV"):
        env.pop(name, None)
    args = [*ablate_args([0]), "--jobs", "2", "--no-mlflow", "--runs-dir", str(workspace / "runs")]
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, *args],
        cwd=workspace,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + LIMIT_S
    victim = None
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        for path in (workspace / "runs").glob("*/placement.json"):
            record = json.loads(path.read_text())
            if record["index"] == 1:  # longest runs first: worker 1 trains no_transformer
                victim = record
        time.sleep(0.2)
    assert victim is not None, "worker 1 never recorded its placement"
    assert victim["gpus"] == ["1"] and victim["pid"] != proc.pid
    time.sleep(2)
    os.kill(victim["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=LIMIT_S)
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err and "BrokenProcessPool" not in err
    assert err.strip().splitlines() == [
        "studies/ablation.yaml: no_transformer seed=0 failed: its worker process died from SIGKILL "
        "(killed: out of host memory, or by a user)"
    ]
    assert out.startswith("placement: 2 GPU(s) (0,1); worker 0: GPU 0; worker 1: GPU 1; this process: CPU only")
    assert "no_transformer seed=0: FAILED (worker 1: GPU 1): its worker process died from SIGKILL" in out
    assert "canonical seed=0: r = " in out and "; worker 0: GPU 0)" in out and "report:" in out
    probe = json.loads(out.split("PROBE ", 1)[1])
    assert probe["keras"] == {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}, "the parent saw no GPU"
    results = [json.loads(p.read_text()) for p in (workspace / "runs").glob("*/result.json")]
    assert len(results) == 1, "canonical finished; the killed run did not"
