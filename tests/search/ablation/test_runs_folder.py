"""``crmlab runs``: a runs folder listed (size, state, study, variant) and pruned of what no study needs; finished
runs of a real study hold no optimiser state, and ``crmlab compare``, ``predict`` and ``explain`` still read them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import keras
import pytest

from crmlab.cli import main
from crmlab.runners.rundir import CheckpointState, Owner, record_run, record_study, run_lock
from crmlab.runners.rundir._retention import resumable_files
from tests.runners.disk import optimizer_state_in
from tests.search.conftest import TINY_ABLATION, TINY_OVERRIDES, TrainedAblation

NATIVE = Path(TINY_ABLATION).parents[1] / "data" / "native_head200.tsv"
DONE, LIVE = Owner("done_study", "ablation", "d" * 16), Owner("live_study", "ablation", "e" * 16)
OLD = time.time() - 40 * 24 * 3600


def _run(runs: Path, key: str, owner: Owner | None, *, finished: bool = False, stage_keys: tuple = ()) -> Path:
    """A run folder with one committed checkpoint, a stage start file and (``finished``) the finished flag."""
    run = runs / key
    run.mkdir(parents=True)
    state = CheckpointState(run)
    state["epoch"], state["stage_keys"] = 1, list(stage_keys)
    state.checkpoint(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), None, best_improved=True)
    (run / "stage0-start.npz").write_bytes(b"start")
    if finished:
        state["finished"] = True
        state.commit()
    if owner is not None:
        record_run(runs, owner, key, ["a" * 64])
    return run


def test_prune_drops_only_what_no_study_will_resume_after_a_dry_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, cache = tmp_path / "runs", tmp_path / "tokens"
    monkeypatch.setenv("CRMLAB_CACHE", str(cache))
    for owner in (DONE, LIVE):
        record_study(runs, owner, "start")
    finished = _run(runs, "1" * 16, DONE, finished=True)  # killed during its clean-up
    abandoned = _run(runs, "2" * 16, DONE)
    resumed = _run(runs, "3" * 16, LIVE, stage_keys=("s1",))
    busy = _run(runs, "4" * 16, DONE)
    orphan = _run(runs, "5" * 16, None)
    record_study(runs, DONE, "finish")
    for name in ("s1", "s2"):
        (runs / "_stages" / name).mkdir(parents=True)
    tuner = runs / "_keras_tuner" / f"done_study-{DONE.key[:12]}"
    tuner.mkdir(parents=True)
    cache.mkdir()
    tokens = {name: cache / name for name in ("a" * 64 + ".npz", "b" * 64 + ".npz", "c" * 64 + ".npz", ".x.tmp")}
    for name, path in tokens.items():
        path.write_bytes(b"tokens")
        if not name.startswith("c"):
            os.utime(path, (OLD, OLD))

    with run_lock(busy):
        assert main(["runs", str(runs)]) == 0
        listed = capsys.readouterr().out
        assert f"{resumed.name}" in listed and "unfinished  live_study" in listed and "running" in listed
        assert "5 runs (1 finished, 3 unfinished, 1 running)" in listed
        assert "studies: done_study, live_study (under way)" in listed

        assert main(["runs", str(runs), "--prune"]) == 0
        dry = capsys.readouterr().out
        assert "run again with --yes" in dry and all(resumable_files(r) for r in (abandoned, orphan, finished))
        assert "its studies have finished" in dry and "no study recorded it" in dry and str(tuner) in dry
        assert "stage cache" not in dry, "a study is under way: its next runs may load any stage cache"

        assert main(["runs", str(runs), "--prune", "--yes"]) == 0
        capsys.readouterr()
    for run in (abandoned, orphan, finished):
        assert resumable_files(run) == [] and (run / "state.json").exists()
    assert resumable_files(resumed) and resumable_files(busy), "a resumable run and a locked one are kept"
    assert CheckpointState(abandoned)["pruned"] and CheckpointState(finished)["finished"]
    assert not tuner.exists()
    assert sorted(p.name for p in cache.iterdir()) == ["a" * 64 + ".npz", "c" * 64 + ".npz"]

    record_study(runs, LIVE, "finish")
    assert main(["runs", str(runs), "--prune", "--yes"]) == 0
    assert "deleted" in capsys.readouterr().out
    assert not (runs / "_stages" / "s2").exists() and not (runs / "_stages" / "s1").exists()
    assert resumable_files(resumed) == [] and resumable_files(busy) == []

    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'nowhere'}: no such runs folder"


@pytest.mark.xdist_group("tiny_ablation")
def test_finished_runs_hold_no_optimizer_state_and_still_compare_predict_and_explain(
    tiny_ablation: TrainedAblation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tiny_ablation.runs
    assert optimizer_state_in(runs) == []
    for result in tiny_ablation.results.values():
        assert resumable_files(result.run_dir) == []
    assert main(["runs", str(runs)]) == 0
    listed = capsys.readouterr().out
    assert "8 runs (8 finished)" in listed and "tiny_ablation" in listed and "no_transformer seed=1" in listed

    sets = [a for o in TINY_OVERRIDES for a in ("--set", o)]
    assert main(["compare", str(TINY_ABLATION), *sets, "--runs-dir", str(runs)]) == 0
    assert "no_transformer" in capsys.readouterr().out
    run = tiny_ablation.results[("canonical", 0)].run_dir
    assert main(["predict", str(run), str(NATIVE), "-o", str(tmp_path / "p.tsv"), "-q"]) == 0
    args = ["explain", str(run), "--test", str(NATIVE), "-o", str(tmp_path / "explain"), "--no-mlflow", "-q"]
    assert main([*args, "--min-hits", "3", "--logos", "1"]) == 0
    assert (tmp_path / "explain" / "motifs.tsv").exists()
