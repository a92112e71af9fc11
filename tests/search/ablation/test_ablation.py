"""Ablation studies end to end on tiny real data: validation before training, resume, comparison, MLflow."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crmlab.registry import SpecErrors, yamlio
from crmlab.search.ablation import collect, load_ablation, run_ablation
from crmlab.search.ablation._study import CONTROL, REFERENCE
from tests.search.conftest import TINY_ABLATION, TINY_OVERRIDES, TrainedAblation

ROOT = Path(__file__).resolve().parents[3]
STUDIES = ROOT / "tests" / "fixtures" / "studies"
NATIVE = ROOT / "tests" / "fixtures" / "data" / "native_head200.tsv"


def test_variants_are_resolved_and_assembled_before_training() -> None:
    ablation = load_ablation(STUDIES / "tiny_ablation.yaml")
    names = [v.name for v in ablation.variants]
    assert names == [REFERENCE, "no_transformer", "no_pretraining", "narrow_head"]
    by = {v.name: v for v in ablation.variants}
    assert "trunk" not in by["no_transformer"].graph.nodes and "trunk" in by[REFERENCE].graph.nodes
    assert [s.name for s in by["no_pretraining"].recipe.stages] == ["finetune"]
    assert by["narrow_head"].graph.nodes["head"].params["units"] == [4]
    assert by["no_transformer"].parameters < by[REFERENCE].parameters


@pytest.mark.parametrize(
    ("variants", "expected"),
    [
        ({"bad": {"remove": ["trnk"]}}, "variants.bad.remove: node 'trnk' does not exist"),
        (
            {"bad": {"set": {"template.params.depht": 2}}},
            "variants.bad.template.params.depht: template crmnet_unet takes",
        ),
        (
            {"bad": {"set": {"recipe.batch_size": "big"}}},
            "variants.bad.recipe.batch_size: input should be a valid integer",
        ),
        (
            {"bad": {"set": {"template.params.depth": 6}}},
            "variants.bad.template.params.depth: length 112 is not divisible",
        ),
    ],
)
def test_a_broken_variant_stops_everything_with_its_key_path(tmp_path: Path, variants: dict, expected: str) -> None:
    doc = yamlio.load(STUDIES / "tiny_ablation.yaml")
    doc["variants"] = variants
    for name in ("tiny_graph.yaml",):
        shutil.copy(STUDIES / name, tmp_path / name)
    (tmp_path / "data").symlink_to(ROOT / "tests" / "fixtures" / "data")
    doc["data"] = {k: {**v, "path": v["path"].replace("../data", "data")} for k, v in doc["data"].items()}
    doc["test_sets"] = {k: {**v, "path": v["path"].replace("../data", "data")} for k, v in doc["test_sets"].items()}
    path = tmp_path / "study.yaml"
    path.write_text(yamlio.dumps(doc))
    with pytest.raises(SpecErrors) as err:
        load_ablation(path)
    lines = [str(i) for i in err.value.issues]
    assert any(line.startswith(f"{path}: {expected}") for line in lines), lines


def test_the_control_is_canonical_under_other_initialisation_seeds() -> None:
    study = STUDIES / "tiny_ablation.yaml"
    plain = load_ablation(study, ["variants={}", "leave_one_out=[]"], assemble=False)
    ablation = load_ablation(study, ["variants={}", "leave_one_out=[]", "controls={replicate: true}"], assemble=False)
    assert [v.name for v in ablation.variants] == [REFERENCE, CONTROL]
    assert ablation.variant(CONTROL).graph.nodes == ablation.variant(REFERENCE).graph.nodes
    for seed in (0, 1):
        canonical, control = ablation.run_recipe(REFERENCE, seed), ablation.run_recipe(CONTROL, seed)
        assert canonical.seed == control.seed == seed  # same data split and batch order
        assert canonical.stream_seed == seed and control.stream_seed == 1_000_000 + seed
        assert canonical == plain.run_recipe(REFERENCE, seed)  # canonical's runs are the same runs with or without it
    assert plain.key == load_ablation(study, ["variants={}", "leave_one_out=[]"], assemble=False).key
    assert ablation.key != plain.key


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["variants={control: {se: off}}"], "variants.control: variant name 'control' is taken"),
        (["seeds=[0, 1000000]"], "seeds: seed 1000000 collides with the control's seeds"),
    ],
)
def test_the_control_keeps_its_name_and_seeds(sets: list[str], expected: str) -> None:
    with pytest.raises(SpecErrors) as err:
        load_ablation(STUDIES / "tiny_ablation.yaml", ["controls={replicate: true}", *sets], assemble=False)
    assert any(expected in str(i) for i in err.value.issues), err.value.issues


VARIANTS = (REFERENCE, CONTROL, "no_transformer", "no_pretraining")


@pytest.mark.xdist_group("tiny_ablation")
def test_run_compare_and_rerun_skips_finished_runs(tiny_ablation: TrainedAblation) -> None:
    runs, uri = tiny_ablation.runs, tiny_ablation.uri
    results, rows, report = tiny_ablation.results, tiny_ablation.rows, tiny_ablation.report
    assert set(results) == {(v, s) for v in VARIANTS for s in (0, 1)}
    for seed in (0, 1):
        canonical, control = results[(REFERENCE, seed)], results[(CONTROL, seed)]
        assert not np.allclose(canonical.predictions["native"], control.predictions["native"])  # other weights
    control_row = next(r for r in rows if r.variant == CONTROL)
    assert control_row.decision is not None and control_row.delta["pearson_r"].n_seeds == 2
    assert "A/A control" in report.read_text()
    row = next(r for r in rows if r.variant == "no_transformer")
    d, decision = row.delta["pearson_r"], row.decision
    low, high = decision.interval
    assert low <= d.delta <= high and 0 < row.p_holm["pearson_r"] <= 1 and d.n_seeds == 2
    assert decision.verdict in ("helps", "hurts", "equivalent", "undecided")
    assert report.exists() and "| no_transformer |" in report.read_text()
    assert (report.parent / "per_seed.csv").exists() and (report.parent / "verdicts.csv").exists()
    assert (report.parent / "bars_native.png").exists()

    mtimes = {p: p.stat().st_mtime for p in runs.glob("*/result.json")}
    again = load_ablation(TINY_ABLATION, TINY_OVERRIDES)
    results2, _, _ = run_ablation(again, runs, uri, progress=lambda _: None)
    assert {p: p.stat().st_mtime for p in runs.glob("*/result.json")} == mtimes, "finished runs were retrained"
    assert results2[("no_transformer", 1)].test_metrics == results[("no_transformer", 1)].test_metrics
    found, missing = collect(again, runs)
    assert not missing and len(found) == 8
    state = json.loads(next((runs / "_studies").glob("*.json")).read_text())
    assert state["parent_run_id"] == logged_runs(uri)[0].info.run_id


def logged_runs(uri: str) -> tuple[Any, list[Any]]:
    """The ablation's parent run and its child runs, from the MLflow server at ``uri``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny_ablation")
    all_runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in all_runs if r.data.tags.get("crmlab.kind") == "ablation"]
    children = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    return parent, children


@pytest.mark.xdist_group("tiny_ablation")
def test_a_study_is_readable_on_an_mlflow_server(
    tiny_ablation: TrainedAblation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = tiny_ablation.uri
    client = MlflowClient(uri)
    assert client.get_experiment_by_name("tiny_ablation").tags["mlflow.experimentKind"] == "custom_model_development"
    parent, children = logged_runs(uri)
    assert len(children) == 8 and {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {(c.data.tags["crmlab.variant"], c.data.tags["crmlab.seed"]) for c in children} == {
        (v, s) for v in VARIANTS for s in ("0", "1")
    }

    # the comparison as a table: one row per variant x test set with interval, Holm p and verdict
    table = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "comparison_table.json", str(tmp_path))).read_text()
    )
    rows_seen = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert {r["variant"] for r in rows_seen} == set(VARIANTS)
    for r in (r for r in rows_seen if r["variant"] != REFERENCE):
        assert r["verdict"] in ("helps", "hurts", "equivalent", "undecided") and r["seeds"] == 2
        assert r["ci_low"] <= r["delta"] <= r["ci_high"] and 0 < r["p_holm"] <= 1 and 0 < r["level"] < 1
    assert "**no_transformer** on native: **" in parent.data.tags["mlflow.note.content"]
    assert "no_transformer.native.delta_pearson_r" in parent.data.metrics
    assert "no_transformer.native.p_holm_pearson_r" in parent.data.metrics
    assert parent.data.tags["crmlab.verdict.no_transformer.native"] in ("helps", "hurts", "equivalent", "undecided")

    # every image report.md embeds is served at the path it names, next to report.md (what the UI's viewer fetches)
    report = Path(client.download_artifacts(parent.info.run_id, "report.md", str(tmp_path))).read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert images and all(not i.startswith(("/", "http")) for i in images), images
    for image in images:
        query = urllib.parse.urlencode({"path": image, "run_uuid": parent.info.run_id})
        with urllib.request.urlopen(f"{uri}/get-artifact?{query}", timeout=30) as response:
            assert response.read(8) == b"\x89PNG\r\n\x1a\n", image

    for child in children:  # each stage's curve starts at step 1: fine-tuning shares one x-axis, pretrained or not
        stages = ["finetune"] if child.data.tags["crmlab.variant"] == "no_pretraining" else ["pretrain", "finetune"]
        for stage in ("pretrain", "finetune"):
            steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, f"{stage}.val_pearson_r"))
            if stage in stages:
                assert steps and steps == list(range(1, len(steps) + 1)), (stage, steps)
            else:
                assert steps == [], (stage, steps)
        assert "val_pearson_r" not in child.data.metrics, "no unscoped duplicate of the stage series"
    no_t = next(c for c in children if c.data.tags["crmlab.variant"] == "no_transformer")
    assert "transformer: false" in no_t.data.tags["mlflow.note.content"]
    assert int(no_t.data.tags["crmlab.parameter_delta"]) < 0 and "transformer: false" in no_t.data.tags["crmlab.patch"]
    inputs = {(d.dataset.name, d.tags[0].value) for d in client.get_run(no_t.info.run_id).inputs.dataset_inputs}
    assert {("dream", "training"), ("random_library", "training"), ("native", "test")} <= inputs, inputs
    digests = {d.dataset.name: d.dataset.digest for d in client.get_run(no_t.info.run_id).inputs.dataset_inputs}
    ablation = load_ablation(TINY_ABLATION, TINY_OVERRIDES)
    assert digests["dream"] == ablation.datasets["dream"].content_hash[:36], "the run key's content hash, truncated"

    # a child's model, fetched from the server, scores sequence strings as the run scored its test set
    import mlflow
    import pandas as pd

    sequences = pd.read_csv(NATIVE, sep="\t")["seq"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model(f"runs:/{no_t.info.run_id}/model")
    logged = pd.read_csv(client.download_artifacts(no_t.info.run_id, "predictions/predictions_native.tsv"), sep="\t")
    np.testing.assert_allclose(model.predict(pd.DataFrame({"sequence": sequences})), logged["predicted"], rtol=1e-5)


@pytest.mark.xdist_group("tiny_ablation")
def test_jobs_train_runs_in_parallel_processes_with_the_same_results(
    tiny_ablation: TrainedAblation, tmp_path: Path
) -> None:
    overrides = ["variants={}", "leave_one_out=[transformer]", "seeds=[0]"]
    messages: list[str] = []
    parallel, _, _ = run_ablation(
        load_ablation(TINY_ABLATION, overrides), tmp_path / "b", jobs=2, mlflow=False, progress=messages.append
    )
    pattern = r"\[(\d)/2\] (\w+) seed=0: r = -?\d\.\d{4} \(native; worker (\d): CPU\) \(\S+ elapsed, ~\S+ left\)"
    seen = [re.fullmatch(pattern, m) for m in messages]
    assert all(seen), messages
    assert sorted(m.group(1) for m in seen) == ["1", "2"], "one progress line per run, counted as they finish"
    assert sorted((m.group(2), m.group(3)) for m in seen) == [("canonical", "0"), ("no_transformer", "1")]
    placements = [json.loads(p.read_text()) for p in (tmp_path / "b").glob("*/placement.json")]
    assert sorted(p["index"] for p in placements) == [0, 1] and all(p["gpus"] == [] for p in placements)
    assert len({p["pid"] for p in placements}) == 2 and os.getpid() not in {p["pid"] for p in placements}
    serial = {key: tiny_ablation.results[key] for key in parallel}  # trained one after another, in this process
    for key, result in serial.items():
        assert parallel[key].run_key == result.run_key
        np.testing.assert_allclose(
            parallel[key].predictions["native"], result.predictions["native"], rtol=1e-4, atol=1e-4
        )
