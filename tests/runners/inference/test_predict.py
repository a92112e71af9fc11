"""``crmlab predict`` / ``crmlab explain`` on a tiny trained run: exact reproduction of the run's test predictions,
saturation mutagenesis against predicting the mutants directly, sequence inputs, MLflow artifacts, errors; the run's
logged pyfunc model (:mod:`crmlab.runners.inference._mlflow_model`) called on sequences, and runs from before it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmlab.cli import main
from crmlab.registry import CrmlabError
from crmlab.runners.data import DataSource, encode, read_sequences
from crmlab.runners.inference import load_model, predict, saturation_mutagenesis
from crmlab.runners.inference._model_store import logged_model_id
from crmlab.runners.rundir import RunResult
from crmlab.runners.studyfile import load_train_study
from crmlab.runners.tracking import Tracker
from crmlab.runners.training import train_run
from tests.conftest import read_rows

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "studies" / "tiny_train.yaml"
NATIVE = ROOT / "tests" / "fixtures" / "data" / "native_head200.tsv"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, str]:
    """A tiny two-stage run (one epoch each) logged to a fresh MLflow store; returns it and the tracking URI."""
    tmp = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    loaded = load_train_study(TINY, ["recipe.stages.0.epochs=1", "recipe.stages.1.epochs=1"])
    tracker = Tracker(uri, "tiny_train")
    result = train_run(
        loaded.graph, loaded.study.recipe, loaded.datasets, loaded.tests, tmp / "runs", tracker=tracker, verbose=0
    )
    return result, uri


def test_predict_by_mlflow_run_id_reproduces_the_logged_test_predictions_exactly(
    trained: tuple[RunResult, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result, uri = trained
    from mlflow.artifacts import download_artifacts

    def logged(name: str) -> list[str]:
        path = f"predictions/predictions_{name}.tsv"
        local = download_artifacts(run_id=result.mlflow_run_id, artifact_path=path, tracking_uri=uri)
        return pd.read_csv(local, sep="\t", dtype=str)["predicted"].tolist()

    def check(out: Path, name: str, rows: int) -> None:
        mine = pd.read_csv(out, sep="\t")
        assert list(mine.columns) == ["id", "measured", "predicted"] and len(mine) == rows
        predicted = mine["predicted"].to_numpy(np.float32)
        # the logged artifact (6 significant digits) is reproduced exactly; the full float32 values agree to the
        # last bit or two (TensorFlow's multi-threaded CPU kernels may split a reduction differently between calls)
        assert [f"{v:.6g}" for v in predicted] == logged(name)
        np.testing.assert_allclose(predicted, result.predictions[name], rtol=1e-6, atol=0)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)  # the Keras file is the logged model's, not a plain artifact of the run
    assert "model.keras" not in {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    assert logged_model_id(client, result.mlflow_run_id) is not None
    out = tmp_path / "native.tsv"
    assert main(["predict", result.mlflow_run_id, str(NATIVE), "-o", str(out), "--tracking-uri", uri, "-q"]) == 0
    assert "200 sequences scored" in capsys.readouterr().out
    check(out, "native", 200)

    github = tmp_path / "github.tsv"
    args = ["predict", str(result.run_dir), str(NATIVE), "-o", str(github), "--where", "in_github_subset=1", "-q"]
    assert main(args) == 0
    check(github, "native_github", 189)


def test_the_logged_pyfunc_model_scores_sequences_like_the_run(
    trained: tuple[RunResult, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.tracking import MlflowClient

    result, uri = trained
    client = MlflowClient(uri)
    model_id = logged_model_id(client, result.mlflow_run_id)
    logged = client.get_logged_model(model_id)
    assert (
        logged.name == "model"
        and logged.status == LoggedModelStatus.READY
        and logged.source_run_id == result.mlflow_run_id
    )
    assert logged.metrics and {m.key for m in logged.metrics} >= {"test.native.pearson_r", "parameters"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model(f"runs:/{result.mlflow_run_id}/model")
    signature = model.metadata.signature
    assert signature.inputs.input_names() == ["sequence"] and signature.outputs.inputs[0].type == np.dtype("float32")
    table = read_sequences(DataSource(path=str(NATIVE)))
    got = model.predict(pd.DataFrame({"sequence": table.sequences}))
    assert got.shape == (200,) and got.dtype == np.float32
    np.testing.assert_allclose(got, result.predictions["native"], rtol=1e-5, atol=0)
    # crmlab's encoding: any case, padded with N or cut at the 3' end to the model's length
    seq = table.sequences[0]
    keras_model = model.unwrap_python_model().loaded.model
    expected = predict(keras_model, encode([seq[:60], seq + "ACGT" * 3]))
    np.testing.assert_array_equal(
        model.predict(pd.DataFrame({"sequence": [seq[:60].lower(), seq + "acgt" * 3]})), expected
    )
    with pytest.raises(CrmlabError, match=r"^sequence:2: sequence has 'X' at position 4; allowed: A, C, G, T, N$"):
        model.predict(pd.DataFrame({"sequence": ["ACGT", "ACGXT"]}))
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{model_id}", tracking_uri=uri))
    pins = (local / "requirements.txt").read_text().split()
    assert {p.split("==")[0] for p in pins} == {"mlflow", "crmlab", "keras", "tensorflow"}
    assert all("==" in p for p in pins) and (local / "input_example.json").is_file()


def test_predict_by_run_id_reads_an_older_runs_model_keras_artifact_and_refuses_a_run_without_a_model(
    trained: tuple[RunResult, str],
) -> None:
    result, uri = trained
    tracker = Tracker(uri, "tiny_train")
    tracker.start("before logged models", {})
    tracker.log_artifact(result.model_path)  # what crmlab logged before the pyfunc model
    older = load_model(tracker.run_id, uri)
    assert older.run_id == tracker.run_id and older.length == 112
    tracker.start("no model", {})
    with pytest.raises(CrmlabError, match=r"has no logged model and no model\.keras") as error:
        load_model(tracker.run_id, uri)
    assert len(str(error.value).splitlines()) == 1


def _mutants(seq: str) -> tuple[list[str], list[tuple[int, int]]]:
    out, where = [], []
    for p, ref in enumerate(seq):
        for b, base in enumerate("ACGT"):
            if base != ref:
                out.append(seq[:p] + base + seq[p + 1 :])
                where.append((p, b))
    return out, where


def test_saturation_mutagenesis_matches_predicting_the_mutants_directly(trained: tuple[RunResult, str]) -> None:
    model = load_model(trained[0].model_path).model
    rows = read_rows("vaishnav_native_complex_3929.tsv", 3)
    sequences = [rows[0]["seq"], rows[1]["seq"][:90], rows[2]["seq"][:60] + "N" + rows[2]["seq"][61:]]
    tokens = encode(sequences)
    lengths = np.array([len(s) for s in sequences])
    reference, effects = saturation_mutagenesis(model, tokens, lengths, batch_size=128)
    assert effects.shape == (3, 112, 4)
    np.testing.assert_array_equal(reference, predict(model, tokens))
    for i, seq in enumerate(sequences):
        assert np.isfinite(effects[i, : len(seq)]).all() and np.isnan(effects[i, len(seq) :]).all()
        for p, ref in enumerate(seq):
            if ref != "N":
                assert effects[i, p, "ACGT".index(ref)] == 0.0  # exactly 0: not a substitution
        mutants, where = _mutants(seq)
        direct = predict(model, encode(mutants)) - predict(model, encode([seq]))[0]
        got = np.array([effects[i, p, b] for p, b in where])
        np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(effects[2, 60]) == 4  # an N is replaced by each of the 4 bases


def test_predict_reads_fasta_and_writes_the_mutagenesis_table(trained: tuple[RunResult, str], tmp_path: Path) -> None:
    rows = read_rows("vaishnav_native_complex_3929.tsv", 2)
    fasta = tmp_path / "two.fa"
    fasta.write_text(f">first\n{rows[0]['seq'][:50]}\n{rows[0]['seq'][50:]}\n>second short\n{rows[1]['seq'][:70]}\n")
    table = read_sequences(DataSource(path=str(fasta)))
    assert table.ids == ["first", "second"] and table.values is None and table.lengths.tolist() == [110, 70]
    out = tmp_path / "pred.tsv"
    assert main(["predict", str(trained[0].model_path), str(fasta), "-o", str(out), "--ism", "-q"]) == 0
    assert pd.read_csv(out, sep="\t").columns.tolist() == ["id", "predicted"]
    ism = pd.read_csv(tmp_path / "pred.ism.tsv", sep="\t")
    assert ism.columns.tolist() == ["id", "position", "ref", "A", "C", "G", "T"] and len(ism) == 110 + 70
    second = ism[ism["id"] == "second"]
    assert second["position"].tolist() == list(range(1, 71)) and "".join(second["ref"]) == rows[1]["seq"][:70]
    for base in "ACGT":
        assert (ism.loc[ism["ref"] == base, base] == 0).all()


def test_explain_a_run_directory_writes_outputs_and_logs_them_to_its_mlflow_run(
    trained: tuple[RunResult, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result, uri = trained
    out = tmp_path / "explained"
    args = ["explain", str(result.run_dir), "--test", str(NATIVE), "-o", str(out), "--tracking-uri", uri]
    assert main([*args, "--min-hits", "3", "--logos", "2", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "saliency at hits above the all-position mean" in printed and "logged to MLflow run" in printed
    table = pd.read_csv(out / "motifs.tsv", sep="\t")
    assert len(table) > 150 and {"REB1", "ABF1", "RAP1"} <= set(table["name"].str.upper())
    assert (table["hits"] > 0).sum() > 10 and np.isfinite(table.loc[table["hits"] > 0, "saliency_at_hits"]).all()
    assert (out / "motif_saliency.png").stat().st_size > 10_000 and len(list((out / "logos").glob("*.png"))) == 2
    saved = np.load(out / "saliency.npz")
    assert saved["saliency"].shape == (200, 112) and saved["contributions"].shape == (200, 112, 4)
    from mlflow.tracking import MlflowClient

    logged = {a.path for a in MlflowClient(uri).list_artifacts(result.mlflow_run_id, "explain/native_head200")}
    assert {"explain/native_head200/motifs.tsv", "explain/native_head200/motif_saliency.png"} <= logged


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "missing.keras", str(NATIVE), "-o", "x.tsv"], "missing.keras: no such model file"),
        (["predict", "not-a-model", str(NATIVE), "-o", "x.tsv"], "not a .keras file, a run directory or an MLflow"),
        (["explain", "missing.keras", "--test", str(NATIVE)], "missing.keras: no such model file"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_bad_base_in_the_input_names_file_and_line(trained: tuple[RunResult, str], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.tsv"
    bad.write_text("seq\nACGTACGT\nACGXACGT\n")
    assert main(["predict", str(trained[0].model_path), str(bad), "-o", str(tmp_path / "o.tsv"), "-q"]) == 2
    assert capsys.readouterr().err.strip() == f"{bad}:3: sequence has 'X' at position 4; allowed: A, C, G, T, N"
