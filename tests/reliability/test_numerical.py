"""Numerical faults: a diverging loss or non-finite weights fail the run with the reason, the MLflow run is marked
FAILED, and an ablation goes on with its other variants and reports the failed one."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from crmlab.cli import main
from crmlab.runners.rundir import CheckpointState, TrainingFailed
from crmlab.runners.studyfile import Recipe, Stage
from crmlab.runners.training._epoch_control import EpochControl
from tests.reliability.workspace import check_one_line_error, make_workspace, mlflow_runs

ONE_STAGE = "recipe.stages=[{name: finetune, data: random_library, epochs: 1, standardize: false}]"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRMLAB_CACHE", str(tmp_path / "cache"))
    return make_workspace(tmp_path)


def _flags(root: Path) -> list[str]:
    return ["--runs-dir", str(root / "runs"), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"]


def test_extreme_target_values_overflow_the_loss_and_fail_the_run(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = workspace / "data" / "random_library_head400.tsv"
    lines = table.read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    huge = [f"{seq}\t{float(value) * 1e30:g}" for seq, value, *_ in rows]  # finite in float32; squared, it is not
    table.write_text("\n".join([lines[0].split("\t", 2)[0] + "\texpression", *huge, ""]))
    args = ["train", str(workspace / "studies" / "train.yaml"), "--verbose", "0", "--set", ONE_STAGE]
    args += ["--set", "recipe.loss.name=mse"]
    rc = main([*args, *_flags(workspace)])
    assert rc == 2
    check_one_line_error(capsys.readouterr().err, "finetune: loss is ", "at epoch 1 (diverged)")
    runs = mlflow_runs(workspace / "mlflow.db")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not list((workspace / "runs").glob("*/result.json")), "a diverged run must not look finished"


def test_non_finite_weights_fail_the_run_even_when_the_loss_is_finite(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    recipe = Recipe(stages=[Stage(name="s", data="d")])

    class _Batches:
        epoch = 0

        def __len__(self) -> int:
            return 1

    control = EpochControl(recipe.stages[0], recipe, _Batches(), CheckpointState(tmp_path), None, None)
    control.set_model(model)
    control.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0, "val_r2": 0.5})
    kernel = model.layers[0].kernel
    kernel.assign(np.where(np.arange(3)[:, None] == 1, np.inf, keras.ops.convert_to_numpy(kernel)))
    with pytest.raises(TrainingFailed, match=r"s: weights are not finite after epoch 2 \(exploding gradients"):
        control.on_epoch_end(1, {"loss": 1.0, "val_loss": 1.0, "val_r2": 0.5})
    assert CheckpointState(tmp_path)["epoch"] == 1, "the broken epoch is not committed"


def test_an_ablation_goes_on_past_a_diverging_variant_and_reports_it(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exploding = "variants={exploding: {set: {recipe.schedule: {kind: constant, peak: 1.0e+12}, recipe.loss.name: mse}}}"
    args = ["ablate", str(workspace / "studies" / "ablation.yaml"), "--set", ONE_STAGE, "--set", exploding]
    args += ["--set", "leave_one_out=[]", "--set", "seeds=[0]", *_flags(workspace)]
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 1, err[-3000:]
    check_one_line_error(err, f"{workspace}/studies/ablation.yaml: exploding seed=0 failed: finetune: ", "diverged")
    assert "canonical" in out and "| exploding |" not in out
    report = next((workspace / "runs" / "_studies").glob("*/report.md")).read_text()
    assert "| canonical |" in report and "## Failed runs" in report and "- exploding seed=0: finetune:" in report
    runs = mlflow_runs(workspace / "mlflow.db")
    status = {r.data.tags.get("crmlab.variant", "parent"): r.info.status for r in runs}
    assert status == {"parent": "FINISHED", "canonical": "FINISHED", "exploding": "FAILED"}
    parent = next(r for r in runs if "crmlab.variant" not in r.data.tags)
    assert parent.data.tags["crmlab.failed_runs"].startswith("exploding seed=0: finetune: ")
