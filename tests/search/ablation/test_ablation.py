"""Ablation studies end to end on tiny real data: validation before training, resume, comparison, MLflow."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
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


JOBS = ["variants={}", "leave_one_out=[transformer]"]
"""The --jobs tests' runs: canonical and no_transformer (two graphs), seeds 0 and 1 (all four in ``tiny_ablation``)."""
FINETUNE_ONLY = ("recipe.stages=[{name: finetune, data: random_library, epochs: 1}]",)
"""The JAX pair's recipe: one stage (it trains its own serial runs, so it need not match ``tiny_ablation``'s)."""


def _train_in_two_rounds(
    monkeypatch: pytest.MonkeyPatch, runs: Path, messages: list[str], extra: tuple[str, ...] = ()
) -> dict[Any, Any]:
    """``run_ablation(jobs=2)`` twice on one pool of two workers: seed 0, then seeds 0 and 1 (seed 0 found finished).

    A round hands its runs to the free workers in order, so canonical goes to worker 0 and no_transformer to worker 1
    both times: in the second round each worker trains its graph again, on the compiled model it kept."""
    from crmlab.runners.parallel import Slot, WorkerPool
    from crmlab.search.ablation import _runs, run_task

    pool = WorkerPool([Slot(0), Slot(1)], run_task)
    monkeypatch.setattr(_runs, "WorkerPool", lambda slots, entry: pool)  # run_ablation's pool is this one,
    monkeypatch.setattr(pool, "close", lambda: None)  # left open between the calls
    results: dict[Any, Any] = {}
    try:
        for seeds in ("[0]", "[0, 1]"):
            ablation = load_ablation(TINY_ABLATION, [*JOBS, *extra, f"seeds={seeds}"])
            found, _, _ = run_ablation(ablation, runs, jobs=2, mlflow=False, progress=messages.append)
            results.update(found)
    finally:
        WorkerPool.close(pool)
    return results


def _check_rounds(messages: list[str], results: dict[Any, Any]) -> None:
    """One progress line per run, each worker trained both runs of its graph in one process (not this one)."""
    pattern = r"\[(\d)/2\] (\w+) seed=(\d): r = -?\d\.\d{4} \(native; worker (\d): CPU\) \(\S+ elapsed, ~\S+ left\)"
    seen = [re.fullmatch(pattern, m) for m in messages]
    assert all(seen), messages
    assert sorted(m.group(1) for m in seen) == ["1", "1", "2", "2"], "per round, counted as they finish"
    expected = [
        ("canonical", "0", "0"),
        ("canonical", "1", "0"),
        ("no_transformer", "0", "1"),
        ("no_transformer", "1", "1"),
    ]
    assert sorted(m.group(2, 3, 4) for m in seen) == expected
    placed = {key: json.loads((r.run_dir / "placement.json").read_text()) for key, r in results.items()}
    worker = {"canonical": 0, "no_transformer": 1}
    assert all(p["gpus"] == [] and p["index"] == worker[name] for (name, _), p in placed.items())
    pids = {key: p["pid"] for key, p in placed.items()}
    assert (
        pids[("canonical", 0)] == pids[("canonical", 1)] != pids[("no_transformer", 0)] == pids[("no_transformer", 1)]
    )
    assert os.getpid() not in pids.values()


def _assert_same_bits(parallel: dict[Any, Any], serial: dict[Any, Any]) -> None:
    """Same run keys, and the same weights, predictions, test and validation metrics and epochs, bit for bit."""
    import keras

    assert sorted(parallel) == [("canonical", 0), ("canonical", 1), ("no_transformer", 0), ("no_transformer", 1)]
    for key, result in parallel.items():
        other = serial[key]
        assert result.run_key == other.run_key, key
        np.testing.assert_array_equal(result.predictions["native"], other.predictions["native"], err_msg=str(key))
        assert result.test_metrics == other.test_metrics and result.validation == other.validation, key
        timing = ("seconds", "time")
        epochs = [[{k: v for k, v in h.items() if k not in timing} for h in r.history] for r in (result, other)]
        assert epochs[0] == epochs[1], key
        weights = [keras.models.load_model(r.model_path, compile=False).get_weights() for r in (result, other)]
        for a, b in zip(*weights, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=str(key))


@pytest.mark.xdist_group("tiny_ablation")
def test_jobs_train_runs_in_parallel_processes_with_the_same_results(
    tiny_ablation: TrainedAblation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's result is a function of its key: trained in a fresh worker, in a worker on the compiled model it kept
    from an earlier run, or one after another in this process (``tiny_ablation``), bit for bit on one CPU."""
    messages: list[str] = []
    parallel = _train_in_two_rounds(monkeypatch, tmp_path / "b", messages)
    _check_rounds(messages, parallel)
    _assert_same_bits(parallel, tiny_ablation.results)


@pytest.mark.skipif(os.environ.get("CRMLAB_NESTED_BACKEND_RUN") == "1", reason="already the nested run")
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed (pip install '.[dev]')")
def test_jobs_train_runs_with_the_same_results_on_jax() -> None:
    """The same pair on JAX: :func:`test_jobs_pair_on_this_backend` in a pytest process of its own."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "CRMLAB_NESTED_BACKEND_RUN": "1"}
    test = f"{Path(__file__).relative_to(ROOT)}::test_jobs_pair_on_this_backend"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", test]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout


@pytest.mark.skipif(
    os.environ.get("CRMLAB_NESTED_BACKEND_RUN") != "1",
    reason="run on JAX by test_jobs_train_runs_with_the_same_results_on_jax",
)
def test_jobs_pair_on_this_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The --jobs runs trained one after another in this process, then in two rounds on two workers: the same bits.
    Fine-tuning only: what differs between processes (names, compiled models) is there in one stage as in two."""
    serial, _, _ = run_ablation(
        load_ablation(TINY_ABLATION, [*JOBS, *FINETUNE_ONLY, "seeds=[0, 1]"]),
        tmp_path / "a",
        mlflow=False,
        progress=lambda _: None,
    )
    messages: list[str] = []
    parallel = _train_in_two_rounds(monkeypatch, tmp_path / "b", messages, FINETUNE_ONLY)
    _check_rounds(messages, parallel)
    _assert_same_bits(parallel, serial)
