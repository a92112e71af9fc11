"""What a run keeps on disk: a finished run holds no resumable or optimiser state (``CRMLAB_KEEP_STATE`` keeps it,
outside the run key), MLflow links the run folder's files instead of copying them, and a run whose state was dropped
(a pruned trial) trains again from its first epoch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmlab.cli import main
from crmlab.runners.inference._model_store import logged_model_id
from crmlab.runners.rundir import Owner
from crmlab.runners.rundir._checkpoint import STAGE_WEIGHTS
from crmlab.runners.rundir._manifest import read_manifest
from crmlab.runners.rundir._retention import KEEP_STATE_ENV, resumable_files
from crmlab.runners.studyfile import load_train_study
from crmlab.runners.tracking import Tracker
from crmlab.runners.training import train_run
from tests.runners.disk import optimizer_state_in

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "studies" / "tiny_train.yaml"
NATIVE = ROOT / "tests" / "fixtures" / "data" / "native_head200.tsv"
SHORT = ["recipe.stages.0.epochs=1", "recipe.stages.1.epochs=2"]
FINISHED_FILES = {
    ".lock", "state.json", "result.json", "graph.yaml", "recipe.yaml", "timing.json", "model.keras",
    "predictions_native.npy", "measured_native.npy", "predictions_native.tsv", "scatter_native.png",
    "predictions_native_github.npy", "measured_native_github.npy", "predictions_native_github.tsv",
    "scatter_native_github.png",
}  # fmt: skip


def test_a_finished_run_keeps_only_what_reading_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = load_train_study(TINY, SHORT)
    runs, uri = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = (loaded.graph, loaded.study.recipe, loaded.datasets, loaded.tests, runs)
    monkeypatch.setenv(KEEP_STATE_ENV, "1")
    tracker = Tracker(uri, "tiny_train")
    kept = train_run(*args, tracker=tracker, verbose=0, owner=Owner("tiny_train", "train"))
    assert [p.name for p in resumable_files(kept.run_dir)] == ["ckpt-4"], "one rolling checkpoint, kept on request"
    assert [r["run"] for r in read_manifest(runs) if r["event"] == "run"] == [kept.run_key]

    monkeypatch.delenv(KEEP_STATE_ENV)
    again = train_run(*args, verbose=0)  # the setting is not in the run key: found finished, not retrained
    run = again.run_dir
    assert again.run_key == kept.run_key and again.history == kept.history
    assert {p.name for p in run.iterdir()} == FINISHED_FILES
    assert optimizer_state_in(runs) == []
    assert {p.name for p in (runs / "_stages").glob("*/*")} == {STAGE_WEIGHTS, "stage.json"}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    artifacts = Path(client.get_run(kept.mlflow_run_id).info.artifact_uri.removeprefix("file://"))
    model = client.get_logged_model(logged_model_id(client, kept.mlflow_run_id))
    keras_file = Path(model.artifact_location.removeprefix("file://")) / "artifacts" / "model.keras"
    assert list((tmp_path / "mlartifacts").rglob("model.keras")) == [keras_file], "MLflow holds the model once"
    assert os.path.samefile(keras_file, run / "model.keras"), "the logged model's model.keras is copied, not linked"
    for name in ("result.json", "predictions/predictions_native.tsv", "plots/scatter_native.png"):
        assert os.path.samefile(artifacts / name, run / Path(name).name), f"{name} is copied, not linked"

    out = tmp_path / "native.tsv"
    assert main(["predict", str(run), str(NATIVE), "-o", str(out), "-q"]) == 0
    predicted = pd.read_csv(out, sep="\t")["predicted"].to_numpy()
    np.testing.assert_allclose(predicted, again.predictions["native"], rtol=1e-5, atol=1e-6)
    capsys.readouterr()


def test_a_run_whose_state_is_dropped_trains_again_from_its_first_epoch(tmp_path: Path) -> None:
    loaded = load_train_study(TINY, SHORT)
    args = (loaded.graph, loaded.study.recipe, loaded.datasets, loaded.tests, tmp_path)

    class Pruned(Exception):
        drop_state = True

    def prune(stage: str, epoch: int, logs: dict) -> None:
        if stage == "finetune":
            raise Pruned

    with pytest.raises(Pruned):
        train_run(*args, verbose=0, epoch_hook=prune)
    run = next(p for p in tmp_path.iterdir() if (p / "state.json").exists())
    state = json.loads((run / "state.json").read_text())
    assert state["pruned"] and state["epoch"] == state["stage"] == 0 and state["history"] == []
    assert state["checkpoint"] is None and resumable_files(run) == []

    result = train_run(*args, verbose=0)
    assert [(h["stage"], h["epoch"], bool(h.get("reused"))) for h in result.history] == [
        ("pretrain", 1, True), ("finetune", 1, False), ("finetune", 2, False),
    ]  # fmt: skip
    assert not json.loads((run / "state.json").read_text())["pruned"]
