"""``crmlab train --register`` against a real ``mlflow server`` (HTTP REST API, proxied artifacts, model registry), and
a dead tracking URI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mlflow_server import BIN, MlflowServer, clean_env
from tests.pg import free_port

ROOT = Path(__file__).resolve().parents[3]
STUDY = ROOT / "tests" / "fixtures" / "studies" / "tiny_train.yaml"
TRAIN_LIMIT_S = 300


def crmlab_command() -> list[str]:
    exe = BIN / "crmlab"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "crmlab.cli"]


def test_train_logs_a_complete_run_to_an_mlflow_server(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    from crmlab.runners.inference._model_store import logged_model_id

    url, server_dir = mlflow_server.url, mlflow_server.folder
    runs_dir = tmp_path / "runs"
    command = [*crmlab_command(), "train", str(STUDY), "--tracking-uri", url, "--runs-dir", str(runs_dir)]
    proc = subprocess.run(
        [*command, "--verbose", "0", "--register", "tiny_served"],
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
    assert {"graph.yaml", "recipe.yaml", "result.json", "plots", "predictions"} <= top, top
    assert "model.keras" not in top, "the Keras file is the logged model's, stored once"
    plots = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    assert sorted(Path(p).name for p in plots) == ["scatter_native.png", "scatter_native_github.png"]
    predictions = [Path(a.path).name for a in client.list_artifacts(run.info.run_id, "predictions")]
    assert "predictions_native.tsv" in predictions

    # the artifacts went through the server into --artifacts-destination and come back unchanged
    fetched = Path(client.download_artifacts(run.info.run_id, "graph.yaml", str(tmp_path / "fetched")))
    assert fetched.read_text() == (run_dir / "graph.yaml").read_text()
    stored = list((server_dir / "artifacts" / experiment.experiment_id).rglob("model.keras"))  # the server is shared
    assert len(stored) == 1 and stored[0].stat().st_size == (run_dir / "model.keras").stat().st_size

    # the run's logged model: a pyfunc model with the Keras file, stored through the server, and registered
    model_id = logged_model_id(client, run.info.run_id)
    logged = client.get_logged_model(model_id)
    assert logged.artifact_location.startswith("mlflow-artifacts:") and model_id in stored[0].parts
    mlmodel = download_artifacts(f"{logged.artifact_location}/MLmodel", tracking_uri=url, dst_path=str(tmp_path / "m"))
    assert "python_function" in Path(mlmodel).read_text()
    version = client.get_model_version("tiny_served", "1")
    assert version.run_id == run.info.run_id and version.source == logged.artifact_location
    assert version.tags["crmlab.study"] == "tiny_train" and version.tags["crmlab.kind"] == "train"
    assert version.tags["crmlab.run_key"] == result["run_key"]
    r = result["test_metrics"]["native"]["pearson_r"]
    assert float(version.tags["test.native.pearson_r"]) == pytest.approx(r, rel=1e-5)
    assert f"registered model tiny_served version 1 (MLflow run {run.info.run_id})" in proc.stdout


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
