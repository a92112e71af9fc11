"""What users made before the sub-package layout still works after it: a runs folder is found finished (run keys are
unchanged) and an MLflow model logged by the old layout loads.

The fixtures in ``tests/fixtures/legacy/`` were made by the code before the move (commit 1cc69d2, where modules sat
flat in ``runners/`` and ``search/``):

- ``runs_v0/``: ``crmlab ablate tests/fixtures/studies/tiny_ablation.yaml --set 'variants={}'
  --set 'leave_one_out=[transformer]' --set 'seeds=[0]'`` (canonical and no_transformer, seed 0), less each run's
  ``model.keras``, PNG and TSV files and the stage cache, which neither ``ablate`` nor ``compare`` reads once a run is
  finished;
- ``mlflow_model_v0/``: the logged model of that study's no_transformer run (its pickle names
  ``crmlab.runners.mlflow_model.SequenceModel``), and ``mlflow_model_v0_predictions_native.npy``, that run's
  predictions of the native test set.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crmlab.runners.training._train
from crmlab.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEGACY = FIXTURES / "legacy"
STUDY = FIXTURES / "studies" / "tiny_ablation.yaml"
OVERRIDES = ["variants={}", "leave_one_out=[transformer]", "seeds=[0]"]


def _no_training(*args: object, **kwargs: object) -> None:
    raise AssertionError("trained a run that the runs folder made before the move holds")


def test_a_runs_folder_made_before_the_move_is_found_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(LEGACY / "runs_v0", runs)
    before = sorted(p.name for p in runs.iterdir())
    monkeypatch.setattr(crmlab.runners.training._train, "_train_stages", _no_training)  # a finished run returns first
    flags = [arg for value in OVERRIDES for arg in ("--set", value)]
    flags += ["--runs-dir", str(runs), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]

    assert main(["ablate", str(STUDY), *flags, "--no-mlflow"]) == 0
    ablate = capsys.readouterr().out
    assert main(["compare", str(STUDY), *flags]) == 0
    compare = capsys.readouterr().out

    assert sorted(p.name for p in runs.iterdir()) == before  # the same two run folders, no new key
    old = pd.read_csv(LEGACY / "runs_v0" / "_studies" / "tiny_ablation-33e87ea7f1fe7099" / "comparison.csv")
    delta = old.set_index("variant").loc["no_transformer", "delta_pearson_r_value"]
    for out in (ablate, compare):
        assert "no_transformer" in out and f"{delta:+.4f}" in out


def test_a_logged_model_names_its_class_by_the_public_package_path() -> None:
    import cloudpickle

    from crmlab.runners.inference import SequenceModel

    pickled = cloudpickle.dumps(SequenceModel())
    assert b"crmlab.runners.inference" in pickled and b"mlflow_model" not in pickled
    assert type(cloudpickle.loads(pickled)) is SequenceModel


def test_an_mlflow_model_logged_before_the_move_loads_and_predicts() -> None:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(LEGACY / "mlflow_model_v0"))
    native = pd.read_csv(FIXTURES / "data" / "native_head200.tsv", sep="\t")
    predicted = model.predict(pd.DataFrame({"sequence": native["seq"]}))
    expected = np.load(LEGACY / "mlflow_model_v0_predictions_native.npy")
    np.testing.assert_allclose(np.asarray(predicted), expected, rtol=1e-5, atol=1e-5)
