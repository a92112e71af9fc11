"""``crmlab explain STUDY.yaml``: every variant of a tiny ablation explained side by side and logged to the parent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmlab.cli import main
from crmlab.search.ablation import load_ablation, run_ablation
from crmlab.search.ablation._study import REFERENCE, state_path
from tests.search.conftest import TINY_ABLATION as STUDY
from tests.search.conftest import TrainedAblation

OVERRIDES = ["variants={}", "leave_one_out=[transformer]", "seeds=[0]"]


@pytest.mark.xdist_group("tiny_ablation")
def test_explain_study_puts_every_variant_side_by_side(
    tiny_ablation: TrainedAblation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, uri = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    common = ["--runs-dir", str(runs), "--tracking-uri", uri]
    assert main(["explain", str(STUDY), *sets, *common, "-q"]) == 2
    assert "2 run(s) not finished: canonical seed=0, no_transformer seed=0" in capsys.readouterr().err

    # the runs this study needs were trained by the shared ablation (same run keys); this study only logs them
    shutil.copytree(tiny_ablation.runs, runs, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_studies"))
    ablation = load_ablation(STUDY, OVERRIDES)
    results, _, _ = run_ablation(ablation, runs, uri, progress=lambda _: None)
    assert all(results[key].run_key == tiny_ablation.results[key].run_key for key in results)
    assert main(["explain", str(STUDY), *sets, *common, "--min-hits", "3", "--logos", "1", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "tiny_ablation: native, seed 0" in printed and "logged to MLflow run" in printed
    out = runs / "_studies" / f"tiny_ablation-{ablation.key}" / "explain-native-seed0"
    comparison = pd.read_csv(out / "comparison.tsv", sep="\t")
    for variant in (REFERENCE, "no_transformer"):
        assert f"{variant}.abs_saliency_ratio" in comparison.columns
        own = pd.read_csv(out / variant / "motifs.tsv", sep="\t").set_index("motif")
        joined = comparison.set_index("motif")[f"{variant}.saliency_at_hits"]
        np.testing.assert_allclose(joined.to_numpy(), own.loc[joined.index, "saliency_at_hits"].to_numpy(), rtol=1e-5)
    a, b = (comparison[f"{v}.saliency_at_hits"] for v in (REFERENCE, "no_transformer"))
    assert not np.allclose(a.dropna(), b.dropna()), "two different models gave the same saliency"
    assert (out / "comparison.png").exists() and (out / REFERENCE / "motif_saliency.png").exists()

    from mlflow.tracking import MlflowClient

    parent_id = json.loads(state_path(runs, ablation).read_text())["parent_run_id"]
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent_id, "explain/native-seed0")}
    assert "explain/native-seed0/comparison.tsv" in logged and "explain/native-seed0/canonical" in logged
