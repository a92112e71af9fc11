"""``crmlab train`` against a real ``mlflow server`` (HTTP REST API, proxied artifacts), and a dead tracking URI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "tests" / "fixtures" / "studies" / "tiny_train.yaml"
BIN = Path(sys.executable).parent
START_LIMIT_S = 60
TRAIN_LIMIT_S = 300


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def crmlab_command() -> list[str]:
    exe = BIN / "crmlab"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "crmlab.cli"]


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The test's environment without a tracking URI of its own; token cache in ``tmp``; CPU only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(CRMLAB_CACHE=str(tmp / "token-cache"), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env.pop("KERAS_BACKEND", None)
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server and its workers (its own process group), then kill what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):  # workers that outlived the server, or a server that hangs
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=15)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real ``mlflow server`` on a free port: SQLite backend store, proxied artifacts. Yields (url, folder)."""
    mlflow_exe = BIN / "mlflow"
    if not mlflow_exe.exists():
        pytest.skip(f"no mlflow executable next to {sys.executable}")
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "server.log"
    command = [
        str(mlflow_exe),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp / 'srv.db'}",
        "--artifacts-destination",
        str(tmp / "artifacts"),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=tmp, env=clean_env(tmp), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {START_LIMIT_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url, tmp
    finally:
        _stop(proc)


def test_train_logs_a_complete_run_to_an_mlflow_server(mlflow_server: tuple[str, Path], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    url, server_dir = mlflow_server
    runs_dir = tmp_path / "runs"
    proc = subprocess.run(
        [*crmlab_command(), "train", str(STUDY), "--tracking-uri", url, "--runs-dir", str(runs_dir), "--verbose", "0"],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TRAIN_LIMIT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()  # nothing logged locally
    (run_dir,) = [p for p in runs_dir.iterdir() if (p / "result.json").exists()]
    result = json.loads((run_dir / "result.json").read_text())

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("tiny_train")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == result["mlflow_run_id"]
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # proxied by the server

    # per-epoch history: 2 epochs per stage, each stage's steps from 1, each metric once (scoped by stage)
    for stage, steps in (("pretrain", [1, 2]), ("finetune", [1, 2])):
        for key in ("val_r2", "loss", "val_loss"):
            history = client.get_metric_history(run.info.run_id, f"{stage}.{key}")
            assert sorted(m.step for m in history) == steps, (stage, key, history)
    metrics = run.data.metrics
    assert not {"loss", "val_loss", "val_r2", "val_pearson_r"} & set(metrics), "no unscoped duplicate series"
    for test_set, values in result["test_metrics"].items():
        for key in ("pearson_r", "spearman_rho", "r2", "mse"):
            assert metrics[f"test.{test_set}.{key}"] == pytest.approx(values[key], rel=1e-6)
    assert "test.native.pearson_r" in metrics and "test.native_github.pearson_r" in metrics
    assert metrics["parameters"] == result["parameters"]["total"]

    params = run.data.params
    assert any(k.startswith("graph.nodes.") for k in params), sorted(params)[:20]
    assert params["recipe.batch_size"] == "64" and params["recipe.strategy"] == "none"
    assert params["recipe.stages.0.name"] == "pretrain" and params["recipe.stages.1.name"] == "finetune"
    assert params["parameters.total"] == str(result["parameters"]["total"])

    tags = run.data.tags
    assert tags["crmlab.run_key"] == run_dir.name == result["run_key"]
    assert tags["crmlab.backend"] == "tensorflow"
    assert tags["crmlab.strategy"] == "none" and tags["crmlab.devices"] == "1"

    top = {Path(a.path).name for a in client.list_artifacts(run.info.run_id)}
    assert {"model.keras", "graph.yaml", "recipe.yaml", "result.json", "plots", "predictions"} <= top, top
    plots = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    assert sorted(Path(p).name for p in plots) == ["scatter_native.png", "scatter_native_github.png"]
    predictions = [Path(a.path).name for a in client.list_artifacts(run.info.run_id, "predictions")]
    assert "predictions_native.tsv" in predictions

    # the artifacts went through the server into --artifacts-destination and come back unchanged
    fetched = Path(client.download_artifacts(run.info.run_id, "graph.yaml", str(tmp_path / "fetched")))
    assert fetched.read_text() == (run_dir / "graph.yaml").read_text()
    stored = list((server_dir / "artifacts").rglob("model.keras"))
    assert len(stored) == 1 and stored[0].stat().st_size == (run_dir / "model.keras").stat().st_size


def test_unreachable_tracking_uri_is_a_one_line_usage_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    runs_dir = tmp_path / "runs"
    env = clean_env(tmp_path, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    started = time.monotonic()
    proc = subprocess.run(
        [*crmlab_command(), "train", str(STUDY), "--tracking-uri", url, "--runs-dir", str(runs_dir), "--verbose", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TRAIN_LIMIT_S,
    )
    seconds = time.monotonic() - started
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-4000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert len(lines) == 1, proc.stderr
    assert "--tracking-uri" in lines[0] and url in lines[0], lines[0]
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), "nothing may be trained without a tracking store"
    assert seconds < 120, f"took {seconds:.0f} s"
