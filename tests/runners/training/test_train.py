"""The training runner on real (tiny) data: stages, resume after SIGKILL, reuse, early stopping, NaN failure."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from crmlab.runners.rundir import CheckpointState, TrainingFailed, load_variables
from crmlab.runners.rundir._checkpoint import STAGE_WEIGHTS
from crmlab.runners.studyfile import Recipe, Stage, load_train_study
from crmlab.runners.studyfile._recipe import EarlyStopping
from crmlab.runners.training import train_run
from crmlab.runners.training._compiled import clear_training_models
from crmlab.runners.training._epoch_control import EpochControl

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "studies" / "tiny_train.yaml"


def _run(tmp_path: Path, overrides: list[str] = ()):  # type: ignore[no-untyped-def]
    loaded = load_train_study(TINY, list(overrides))
    return train_run(loaded.graph, loaded.study.recipe, loaded.datasets, loaded.tests, tmp_path, verbose=0)


def test_two_stage_run_evaluates_every_test_set_and_skips_when_finished(tmp_path: Path) -> None:
    clear_training_models()
    result = _run(tmp_path)
    assert [(h["stage"], h["epoch"]) for h in result.history] == [
        ("pretrain", 1), ("pretrain", 2), ("finetune", 1), ("finetune", 2),
    ]  # fmt: skip
    assert set(result.test_metrics) == {"native", "native_github"}
    for m in result.test_metrics.values():
        assert set(m) == {"pearson_r", "spearman_rho", "r2", "mse"} and all(np.isfinite(list(m.values())))
    assert result.predictions["native_github"].shape == (189,)
    model = keras.models.load_model(result.model_path)
    tokens = load_train_study(TINY).tests["native"].tokens.astype("int32")
    np.testing.assert_allclose(model.predict(tokens, verbose=0).ravel(), result.predictions["native"], rtol=1e-5)
    again = _run(tmp_path)
    assert again.run_key == result.run_key and again.test_metrics == result.test_metrics
    retrained = _run(tmp_path / "elsewhere")  # the compiled model is reused, re-initialised as a fresh one
    assert retrained.test_metrics == result.test_metrics and retrained.validation == result.validation


def test_a_shared_pretraining_stage_is_trained_once(tmp_path: Path) -> None:
    first = _run(tmp_path)
    second = _run(tmp_path, ["recipe.stages.1.epochs=1"])
    assert second.run_key != first.run_key
    reused = [h for h in second.history if h.get("reused")]
    assert [h["epoch"] for h in reused] == [1, 2] and all(h["stage"] == "pretrain" for h in reused)
    assert [h["val_r2"] for h in reused] == [h["val_r2"] for h in first.history[:2]]


def test_keep_previous_mixes_the_stage_start_back_in_across_a_restart_and_the_export_averages_strands(
    tmp_path: Path,
) -> None:
    from tensorflow.python.framework import config

    from crmlab.blocks.assemble import assemble
    from crmlab.runners.training._batches import reverse_complement

    plain = _run(tmp_path, ["recipe.deterministic=true"])
    assert not config.is_op_determinism_enabled(), "switched off after the run: later runs train as in a new process"
    overrides = [
        "recipe.deterministic=true",
        "recipe.stages.1.keep_previous=0.25",
        "recipe.average_reverse_complement=true",
    ]
    loaded = load_train_study(TINY, overrides)

    class Crash(Exception):
        pass

    def crash_after_first_finetune_epoch(stage: str, epoch: int, logs: dict) -> None:
        if stage == "finetune" and epoch == 1:
            raise Crash

    args = (loaded.graph, loaded.study.recipe, loaded.datasets, loaded.tests, tmp_path)
    with pytest.raises(Crash):
        train_run(*args, verbose=0, epoch_hook=crash_after_first_finetune_epoch)
    mixed = train_run(*args, verbose=0)
    assert [h["epoch"] for h in mixed.history if h.get("reused")] == [1, 2], "pretraining reused from the cache"

    model = assemble(loaded.graph)
    load_variables(model, next((tmp_path / "_stages").glob(f"*/{STAGE_WEIGHTS}")))
    before = model.get_weights()
    after = keras.models.load_model(plain.model_path).get_weights()
    got = keras.models.load_model(mixed.model_path)
    for b, a, g in zip(before, after, got.get_weights(), strict=True):
        np.testing.assert_allclose(g, 0.25 * b + 0.75 * a, rtol=1e-4, atol=1e-6)

    best = max((h for h in plain.history if h["stage"] == "finetune"), key=lambda h: h["val_r2"])
    for k in ("val_r2", "val_pearson_r", "val_mse", "val_loss"):  # restored best epoch: the epoch's own metrics
        assert plain.validation[k] == pytest.approx(best[k], abs=2e-4), k
    assert mixed.validation["val_pearson_r"] != pytest.approx(plain.validation["val_pearson_r"], abs=1e-6)

    tokens = loaded.tests["native"].tokens
    forward = got.predict(tokens.astype("int32"), verbose=0).ravel()
    np.testing.assert_allclose(forward, mixed.predictions["native"], rtol=1e-5)
    flipped = got.predict(reverse_complement(tokens).astype("int32"), verbose=0).ravel()
    np.testing.assert_allclose(flipped, forward, rtol=1e-5, atol=1e-6)


def test_diverging_loss_fails_the_run_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(TrainingFailed, match=r"pretrain: (loss|val_loss) is (nan|inf|-inf) at epoch \d"):
        _run(tmp_path, ["recipe.schedule={kind: constant, peak: 1.0e+12}", "recipe.loss.name=mse"])


def test_early_stopping_triggers_and_survives_a_restart(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    recipe = Recipe(early_stopping=EarlyStopping(monitor="val_r2", patience=2), stages=[Stage(name="s", data="d")])

    class _Batches:
        epoch = 0

        def __len__(self) -> int:
            return 1

    def control(state: CheckpointState) -> EpochControl:
        c = EpochControl(recipe.stages[0], recipe, _Batches(), state, None, None)
        c.set_model(model)
        return c

    state = CheckpointState(tmp_path)
    c = control(state)
    for epoch, r2 in enumerate([0.5, 0.6, 0.55]):
        model.stop_training = False
        c.on_epoch_begin(epoch)
        c.on_epoch_end(epoch, {"loss": 1.0, "val_loss": 1.0, "val_r2": r2})
    assert not model.stop_training and state["wait"] == 1 and state["best"] == 0.6
    restarted = control(CheckpointState(tmp_path))
    restarted.on_epoch_begin(3)
    restarted.on_epoch_end(3, {"loss": 1.0, "val_loss": 1.0, "val_r2": 0.58})
    assert model.stop_training, "patience 2 reached across the restart"
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 4


def test_resuming_on_another_device_count_is_refused_in_one_line(tmp_path: Path) -> None:
    from crmlab.registry import CrmlabError
    from crmlab.runners.rundir import data_hashes, run_key
    from crmlab.runners.training._train import ALLOW_DEVICE_CHANGE

    loaded = load_train_study(TINY, ["recipe.stages.0.epochs=1", "recipe.stages.1.epochs=1"])
    key = run_key(loaded.graph, loaded.study.recipe, data_hashes(loaded.datasets, loaded.tests))
    (tmp_path / key).mkdir()
    state = CheckpointState(tmp_path / key)
    state["devices"] = 8  # as if it had started on 8 GPUs
    state.commit()
    with pytest.raises(CrmlabError) as info:
        train_run(loaded.graph, loaded.study.recipe, loaded.datasets, loaded.tests, tmp_path, verbose=0)
    batch = loaded.study.recipe.batch_size
    assert str(info.value) == (
        f"{tmp_path / key}: this run started on 8 device(s) (global batch {8 * batch}) and this process has 1 "
        f"(global batch {batch}); resume it on 8, or set {ALLOW_DEVICE_CHANGE}=1 to go on with the new global batch"
    )
    assert json.loads((tmp_path / key / "state.json").read_text())["devices"] == 8, "nothing changed"


def test_steps_per_execution_is_operational_same_key_compiled_in(tmp_path: Path) -> None:
    """Several steps per call of the compiled step function: the same run key as one step per call (it changes how
    steps are launched, not what they compute: Keras runs the same steps in a loop) and a compiled model that uses
    it; the kept model of the other setting is not reused for it."""
    from crmlab.runners.rundir import data_hashes, run_key
    from crmlab.runners.training._compiled import training_model

    one, many = (load_train_study(TINY, [f"recipe.steps_per_execution={n}"]) for n in (1, 5))
    hashes = data_hashes(one.datasets, one.tests)
    assert run_key(one.graph, one.study.recipe, hashes) == run_key(many.graph, many.study.recipe, hashes)
    compiled = training_model(many.graph, many.study.recipe)
    assert compiled.model.steps_per_execution == 5
    assert training_model(one.graph, one.study.recipe).model.steps_per_execution == 1
    clear_training_models()
