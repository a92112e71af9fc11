"""The benchmark scripts in CI size (``--quick``) and the pieces of :mod:`crmlab.runners.benchmark` they rely on."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "studies/graphs/crmnet_small.yaml"
TINY = ROOT / "tests/fixtures/studies/tiny_graph.yaml"
"""The suite's tiny CRMnet: what the step-time script's test checks (its table and MLflow run) needs no more."""


def run_script(script: str, *args: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_step_time_quick_both_backends_logged_to_mlflow(tmp_path: Path) -> None:
    import mlflow

    out = tmp_path / "step_time.csv"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stdout = run_script(
        "step_time.py",
        str(TINY),
        "--quick",
        "--backends",
        "tensorflow",
        "jax",
        "--out",
        str(out),
        "--tracking-uri",
        uri,
    )
    rows = read_csv(out)
    assert [(r["backend"], r["batch_size"], r["precision"]) for r in rows] == [
        ("tensorflow", "8", "float32"),
        ("jax", "8", "float32"),
    ]
    for row in rows:
        assert float(row["ms_per_step"]) > 0
        assert float(row["seq_per_s"]) == pytest.approx(8000 / float(row["ms_per_step"]), rel=0.01)
        assert float(row["epoch_hours"]) == pytest.approx(
            -(-30_722_376 // 8) * float(row["ms_per_step"]) / 3.6e6, rel=0.01
        )
    assert [r["jit_compile"] for r in rows] == ["False", "True"]  # Keras' auto: no XLA on a CPU for TF; JAX jits
    last = stdout.strip().splitlines()
    assert last[-3].split()[:2] == ["spec", "backend"] and last[-1].split()[1] == "jax"
    client = mlflow.tracking.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("bench").experiment_id])
    assert run.data.metrics["best_seq_per_s"] == pytest.approx(max(float(r["seq_per_s"]) for r in rows))
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"step_time.csv", "step_time.md"}


def test_overhead_quick_matches_parameters_and_reports_ratio(tmp_path: Path) -> None:
    out = tmp_path / "overhead.csv"
    stdout = run_script("overhead.py", "--quick", "--out", str(out))
    assembled, hand = read_csv(out)
    assert (assembled["model"], hand["model"]) == ("assembled", "hand_written")
    assert assembled["parameters"] == hand["parameters"] == "38013"  # crmnet_keras.QUICK
    ratio = float(assembled["steps_per_s"]) / float(hand["steps_per_s"])
    assert float(assembled["ratio_vs_hand_written"]) == pytest.approx(ratio, abs=0.002)
    assert stdout.strip().splitlines()[-1].startswith("overhead ratio")


def test_pipeline_quick_compares_stages_with_the_model(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.csv"
    run_script("pipeline.py", "--quick", "--out", str(out))
    rows = read_csv(out)
    assert [r["stage"] for r in rows] == ["tokenise", "batch", "feed"]
    for row in rows:
        assert row["sequences"] == "2000" and float(row["seq_per_s"]) > 0 and float(row["model_seq_per_s"]) > 0
        assert float(row["headroom"]) == pytest.approx(float(row["seq_per_s"]) / float(row["model_seq_per_s"]), 0.05)


def test_hand_written_crmnet_has_canonical_parameter_count() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from crmnet_keras import build_crmnet
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert build_crmnet().count_params() == 34_170_289


def test_out_of_memory_is_a_blank_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    from crmlab.runners.benchmark import _report as bench_report
    from crmlab.runners.benchmark import _step_time as bench

    def exhausted(*args: object, **kwargs: object) -> None:
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 68719476736 bytes.")

    monkeypatch.setattr(bench, "compiled_model", exhausted)
    cell = bench.measure(SMALL, batch_size=1 << 20)
    assert cell.seconds_per_step is None and cell.error == "out of memory"
    (row,) = bench_report.table_rows([cell])
    assert row["ms_per_step"] == row["seq_per_s"] == row["epoch_hours"] == ""
    assert "out of memory" in bench_report.text_table([row])


def test_other_errors_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    from crmlab.runners.benchmark import _step_time as bench

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a genuine bug")

    monkeypatch.setattr(bench, "compiled_model", broken)
    with pytest.raises(ValueError, match="genuine bug"):
        bench.measure(SMALL)


def test_unknown_precision_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    from crmlab.cli import main

    assert main(["bench", str(SMALL), "--precisions", "float8", "--no-mlflow", "--out", "/dev/null"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["--precision: unknown precision 'float8' (choose from float32, mixed_float16, mixed_bfloat16)"]


def test_pruning_quick_counts_epochs_of_both_modes(tmp_path: Path) -> None:
    out = tmp_path / "pruning.csv"
    stdout = run_script("pruning.py", "--quick", "--work-dir", str(tmp_path / "work"), "--out", str(out))
    rows = {r["mode"]: r for r in read_csv(out)}
    assert set(rows) == {"with pruning", "without pruning"}
    pruned, full = rows["with pruning"], rows["without pruning"]
    assert pruned["pruner"] == "median" and full["pruner"] == "none"
    assert pruned["trials"] == full["trials"] == "3" and full["pruned"] == "0"
    # every trial without pruning trains its whole schedule: a 1-epoch pretraining stage (if on) and 2 fine-tuning
    assert int(full["finetune_epochs"]) == 6 and 6 <= int(full["epochs"]) <= 9
    assert int(pruned["finetune_epochs"]) == 6 - int(pruned["pruned"])  # a pruned trial stopped after epoch 1
    assert "epochs with pruning / without:" in stdout and out.with_suffix(".md").exists()


def test_data_scale_quick_loads_plain_and_gzip_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "data_scale.csv"
    stdout = run_script("data_scale.py", "--quick", "--tmp", str(tmp_path), "--out", str(out))
    rows = read_csv(out)
    assert [r["table"] for r in rows] == ["plain", "gzip"]
    for row in rows:
        assert row["rows"] == "20000" and row["workers"] == "2" and row["tokens_mb"] == "2"
        assert float(row["first_load_s"]) > 0 and float(row["cached_load_s"]) >= 0
        assert int(row["first_peak_rss_mb"]) > 0 and int(row["worker_epoch_anon_mb"]) < 50
    assert sorted(tmp_path.iterdir()) == [out]  # the table and its cache are gone
    assert stdout.strip().splitlines()[-3].startswith("table") and "goals:" in stdout


def test_fit_throughput_quick_times_the_runners_loop_against_the_step(tmp_path: Path) -> None:
    out = tmp_path / "fit_throughput.csv"
    stdout = run_script("fit_throughput.py", "--quick", "--out", str(out))
    (row,) = read_csv(out)
    assert (row["model"], row["parameters"], row["batch_size"], row["steps_per_epoch"]) == (
        "tiny",
        "9519",
        "64",
        "8",
    )
    loop, step = float(row["loop_seq_per_s"]), float(row["step_seq_per_s"])
    assert loop > 0 and step > 0 and float(row["first_epoch_s"]) > 0
    assert float(row["loop_vs_step"]) == pytest.approx(loop / step, abs=0.002)
    assert float(row["loop_seq_per_s"]) == pytest.approx(8 * 64 / float(row["epoch_s"]), rel=0.02)
    assert "loop_vs_step" in stdout.splitlines()[-2]
