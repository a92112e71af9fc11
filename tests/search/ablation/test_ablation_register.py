"""``crmlab ablate --register``: a named variant and seed of the shared tiny ablation (conftest.py) registered in its
``mlflow server``'s model registry, with the run's logged model and tags (nothing is trained here)."""

from __future__ import annotations

from argparse import Namespace

import pytest
from mlflow.tracking import MlflowClient

from crmlab.model_registry import check_ablation_options, register_ablation
from crmlab.runners.inference._model_store import logged_model_id
from crmlab.search.ablation import load_ablation
from tests.search.conftest import TINY_ABLATION, TINY_OVERRIDES, TrainedAblation

pytestmark = pytest.mark.xdist_group("tiny_ablation")


def test_ablate_registers_the_named_variant_and_seed(
    tiny_ablation: TrainedAblation, capsys: pytest.CaptureFixture[str]
) -> None:
    ablation = load_ablation(TINY_ABLATION, TINY_OVERRIDES, assemble=False)
    name = "tiny_ablation_no_transformer"
    args = Namespace(register=name, register_variant="no_transformer", register_seed=1, tracking_uri=tiny_ablation.uri)
    choice = check_ablation_options(args, ablation)
    register_ablation(args, ablation, choice, tiny_ablation.results)
    result = tiny_ablation.results[("no_transformer", 1)]
    assert f"registered model {name} version 1 (MLflow run {result.mlflow_run_id})" in capsys.readouterr().out
    client = MlflowClient(tiny_ablation.uri)
    version = client.get_model_version(name, "1")
    assert version.run_id == result.mlflow_run_id
    assert version.source == client.get_logged_model(logged_model_id(client, result.mlflow_run_id)).artifact_location
    tags = version.tags
    assert (tags["crmlab.kind"], tags["crmlab.study"]) == ("ablation", "tiny_ablation")
    assert (tags["crmlab.variant"], tags["crmlab.seed"], tags["crmlab.run_key"]) == (
        "no_transformer",
        "1",
        result.run_key,
    )
    r = result.test_metrics["native"]["pearson_r"]
    assert float(tags["test.native.pearson_r"]) == pytest.approx(r, rel=1e-5)
