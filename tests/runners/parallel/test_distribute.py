"""Distributed training for real: TF ``mirrored`` on 2 logical CPU devices, JAX ``data_parallel`` on 8 (a TPU v3-8's
or an 8-GPU machine's replica count).

Each run is a subprocess, because the devices must be configured before TensorFlow / JAX initialise: TensorFlow
splits its CPU into 2 logical devices (``tf.config.set_logical_device_configuration``), JAX gets 8 host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``). GPUs are hidden so the runs are the same on any machine.

The comparison is exact mathematics up to float rounding: the graph has no BatchNorm (its statistics are per
replica) and no dropout (its masks depend on the device), the learning rate is constant and not scaled
(``lr_scaling: none``), early stopping never restores an earlier epoch, and the per-replica batch is the global
one divided by the replicas (32 on 2, 8 on 8) so the global batch (64) and the batch order are those of the
single-device run. Then the summed per-replica gradients equal the single-device gradient up to the order of
float32 additions, and the test predictions agree to a few float32 ulps (observed: about 1e-6 at predictions of
about 14, on 2 and on 8 devices).

Tolerance: ``1e-4 * max |prediction|`` (about 1.5e-3 expression units), some 1000 times the observed rounding
difference and at least 10 times smaller than the change caused by a wrong global batch (the control run in the
single-device process trains with global batch 32 and must land outside the tolerance, so the test can tell a
correct split of the batch from a wrong one).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
STUDY = ROOT / "tests" / "fixtures" / "studies" / "tiny_train.yaml"
RTOL = 1e-4  # of max |prediction|; see the module docstring
SUBPROCESS_LIMIT_S = 120  # hard stop; each run takes about 6-15 s on 2 CPU cores

GRAPH = """\
name: dp_check
description: no BatchNorm, no dropout, so 1 and n replicas compute the same function
inputs:
  seq: {shape: [112], dtype: int32}
nodes:
  onehot: {block: onehot_input, inputs: [seq]}
  enc:
    block: se_conv_encoder
    inputs: [onehot]
    params: {filters: 8, kernel_size: 5, batch_norm: false, dropout: 0.0, downsample: false}
  head: {block: mlp_head, inputs: [enc.out], params: {units: [8], dropout: 0.0}}
outputs: [head]
"""

RECIPE = (
    "recipe={seed: 0, batch_size: 64, epochs: 3, strategy: none, lr_scaling: none,"
    " schedule: {kind: constant, peak: 3.0e-3},"
    " early_stopping: {monitor: val_loss, patience: 10, restore_best: false},"
    " stages: [{name: finetune, data: random_library}]}"
)

# Runs train_run for each entry of the JSON config (argv[1]) and prints one JSON line: the Distribution that
# train_run actually used (make_distribution is wrapped in runners.compiled), the device count, test predictions,
# metrics, losses.
DRIVER = """\
import json, sys, time
cfg = json.loads(sys.argv[1])
started = time.perf_counter()
if cfg["backend"] == "tensorflow":
    import tensorflow as tf  # configure the logical devices before anything initialises TensorFlow

    if cfg["devices"] > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cfg["devices"])
    device_count = len(tf.config.list_logical_devices("CPU"))
else:
    import jax

    device_count = jax.device_count()
import keras

import crmlab.runners.training._compiled as compiled
import crmlab.runners.training._train as train
from crmlab.runners.studyfile._loader import load_train_study

used = []
make_distribution = compiled.make_distribution


def recording(name):
    used.append(make_distribution(name))
    return used[-1]


compiled.make_distribution = recording
out = {"backend": keras.config.backend(), "device_count": device_count, "runs": []}
for run in cfg["runs"]:
    loaded = load_train_study(cfg["study"], run["overrides"])
    result = train.train_run(
        loaded.graph, loaded.study.recipe, loaded.datasets, loaded.tests, run["runs_dir"], tracker=None, verbose=0
    )
    dist = used[-1]
    out["runs"].append({
        "strategy": dist.name,
        "replicas": dist.replicas,
        "devices": dist.devices,
        "predictions": {k: v.tolist() for k, v in result.predictions.items()},
        "metrics": result.test_metrics,
        "loss": [h["loss"] for h in result.history],
        "val_loss": [h["val_loss"] for h in result.history],
        "validation": result.validation,
    })
out["seconds"] = time.perf_counter() - started
print(json.dumps(out))
"""


def _overrides(graph: Path, strategy: str, per_replica_batch: int) -> list[str]:
    return [f"graph={graph}", RECIPE, f"recipe.strategy={strategy}", f"recipe.batch_size={per_replica_batch}"]


def _run(backend: str, devices: int, runs: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """One driver subprocess on ``backend`` with ``devices`` CPU devices; its JSON result."""
    tmp.mkdir(parents=True, exist_ok=True)
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TF_CONFIG", "TPU_NAME", "COLAB_TPU_ADDR")}
    env.update(
        KERAS_BACKEND=backend,
        CUDA_VISIBLE_DEVICES="",  # CPU devices only: a GPU would change what the strategies pick
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="2",
        CRMLAB_CACHE=str(tmp / "token-cache"),
    )
    if backend == "jax" and devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    config = {"backend": backend, "devices": devices, "study": str(STUDY), "runs": runs}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(driver), json.dumps(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_LIMIT_S,
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, f"{backend} on {devices} device(s) failed:\n{proc.stderr[-4000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = seconds
    assert out["backend"] == backend
    assert out["device_count"] == devices, f"expected {devices} {backend} CPU devices, got {out['device_count']}"
    return out


def _max_diff(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max()) for k in a)


@pytest.mark.parametrize(
    "backend, strategy, devices",
    [("tensorflow", "mirrored", 2), ("jax", "data_parallel", 8)],
)
def test_replicas_match_the_single_device_run(backend: str, strategy: str, devices: int, tmp_path: Path) -> None:
    if backend == "jax" and importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install -e '.[dev]')")
    graph = tmp_path / "graph.yaml"
    graph.write_text(GRAPH)

    single = _run(
        backend,
        1,
        [
            {"overrides": _overrides(graph, "none", 64), "runs_dir": str(tmp_path / "runs-single")},
            # control: a wrong global batch (32 instead of 64) must fall outside the tolerance
            {"overrides": _overrides(graph, "none", 32), "runs_dir": str(tmp_path / "runs-control")},
        ],
        tmp_path / "single",
    )
    multi = _run(
        backend,
        devices,
        [{"overrides": _overrides(graph, strategy, 64 // devices), "runs_dir": str(tmp_path / "runs-multi")}],
        tmp_path / "multi",
    )
    reference, control = single["runs"]
    (distributed,) = multi["runs"]

    assert reference["strategy"] == "none" and reference["replicas"] == 1
    assert distributed["strategy"] == strategy, distributed
    assert distributed["replicas"] == devices, distributed
    assert len(set(distributed["devices"])) == devices, distributed["devices"]

    scale = max(float(np.abs(np.asarray(p)).max()) for p in reference["predictions"].values())
    tolerance = RTOL * scale
    diff = _max_diff(reference["predictions"], distributed["predictions"])
    control_diff = _max_diff(reference["predictions"], control["predictions"])
    print(
        f"{backend} {strategy}: max |diff| {diff:.2e}, tolerance {tolerance:.2e}, control {control_diff:.2e}; "
        f"single {single['wall_seconds']:.1f} s, {devices} devices {multi['wall_seconds']:.1f} s"
    )
    assert control_diff > 10 * tolerance, (
        f"the control (global batch 32) differs by only {control_diff:.2e}: the test cannot tell a wrong batch"
    )
    assert diff <= tolerance, (
        f"{strategy} on {devices} devices: test predictions differ from the single-device run by {diff:.3e} "
        f"(tolerance {tolerance:.2e}; a wrong global batch gives {control_diff:.2e}); "
        f"losses {reference['loss']} vs {distributed['loss']}"
    )
    np.testing.assert_allclose(distributed["loss"], reference["loss"], rtol=1e-4)
    # The first epoch's validation loss checks Keras' cross-replica reduction. Later epochs are not compared: once
    # (TensorFlow mirrored, CI on 2 loaded cores) Keras reported about half the validation loss for epochs 2-3 while
    # the weights, the training losses and the predictions matched to 1e-6; 27 local runs under load never did.
    # The run's own final validation (``result.validation``, numpy metrics of the predictions) is the reference.
    np.testing.assert_allclose(distributed["val_loss"][:1], reference["val_loss"][:1], rtol=1e-4)
    assert distributed["validation"].keys() == reference["validation"].keys() != set()
    for key, value in reference["validation"].items():
        assert distributed["validation"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for name, metrics in reference["metrics"].items():
        for key in ("pearson_r", "r2", "mse"):
            assert distributed["metrics"][name][key] == pytest.approx(metrics[key], abs=1e-3), (name, key)


def test_tensorflow_multi_worker_is_a_one_line_error_naming_the_alternative(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras 3 cannot fit under MultiWorkerMirroredStrategy (tried with two loopback workers on TF_CONFIG: fit fails
    converting PerReplica batches), so the strategy is refused before anything trains, also when ``auto`` finds
    ``TF_CONFIG``; the message names JAX's multi_worker (tests/runners/parallel/test_multiprocess.py)."""
    import keras

    from crmlab.registry import SpecError
    from crmlab.runners.parallel import make_distribution

    if keras.config.backend() != "tensorflow":
        pytest.skip("a TensorFlow strategy")
    with pytest.raises(SpecError, match=r"recipe\.strategy: multi_worker: Keras 3\.\S+ cannot train") as info:
        make_distribution("multi_worker")
    assert "--backend jax and strategy: multi_worker" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"index": 0}}))
    with pytest.raises(SpecError, match="multi_worker"):
        make_distribution("auto")


def test_the_tensorflow_tpu_strategy_says_it_is_untested(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``strategy: tpu`` prints, before it connects to the TPU, that this path never ran on one (no TPU is reachable
    here: the resolver is replaced by one that fails as it would without a TPU)."""
    import keras

    if keras.config.backend() != "tensorflow":
        pytest.skip("a TensorFlow strategy")
    import tensorflow as tf

    from crmlab.runners.parallel import make_distribution

    class NoTPU:
        def __init__(self, tpu: str = "") -> None:
            raise ValueError("Please provide a TPU Name to connect to.")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", NoTPU)
    with pytest.raises(ValueError, match="TPU Name"):
        make_distribution("tpu")
    assert "strategy tpu: TensorFlow's TPUStrategy path has never run on a TPU" in capsys.readouterr().err
