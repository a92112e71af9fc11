"""Saliency: backend gradients against finite differences (TensorFlow and JAX), gradient x input on real sequences."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest

from crmlab.blocks.conv import SEConvEncoder
from crmlab.blocks.sequence import OneHotInput
from crmlab.registry import CrmlabError
from crmlab.runners.inference._explain import input_gradients, onehot_model, saliency

ROOT = Path(__file__).resolve().parents[3]
OTHER = "jax" if keras.config.backend() == "tensorflow" else "tensorflow"


@pytest.fixture
def float64() -> Iterator[None]:
    """Build and run layers (the blocks' inner layers included) in float64 (global policy and floatx)."""
    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy("float64")
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)


def _small_model() -> keras.Model:
    """tokens -> one-hot -> conv encoder -> dense: small, CRMnet-like, smooth (no ReLU kinks for finite differences)."""
    keras.utils.set_random_seed(3)
    tokens = keras.Input((112,), dtype="int32", name="seq")
    x = OneHotInput(name="onehot")(tokens)
    x = SEConvEncoder(filters=4, kernel_size=5, se_ratio=None, activation="gelu", name="enc")(x)[0]
    return keras.Model(tokens, keras.layers.Dense(1)(keras.layers.Flatten()(x)))


def test_gradients_match_central_finite_differences(real_tokens: np.ndarray, float64: None) -> None:
    if keras.config.backend() == "jax" and os.environ.get("JAX_ENABLE_X64") != "1":
        pytest.skip("float64 on JAX needs JAX_ENABLE_X64=1 (the backend test below sets it)")
    sub = onehot_model(_small_model())
    x = np.eye(5)[real_tokens[:4].astype(np.int64)]  # (4, 112, 5) float64 one-hot of real sequences

    def f(v: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(sub(v, training=False)).reshape(-1)

    grad = input_gradients(lambda v: sub(v, training=False))(x)
    assert grad.shape == x.shape and grad.dtype == np.float64 and np.abs(grad).max() > 1e-4
    h = 1e-3  # JAX's CPU convolutions round like float32 even with x64, so a step this size, and 0.2% tolerance
    rng = np.random.default_rng(0)
    for i, p, c in zip(rng.integers(0, 4, 40), rng.integers(0, 112, 40), rng.integers(0, 5, 40), strict=True):
        e = np.zeros_like(x)
        e[i, p, c] = h
        fd = (f(x + e)[i] - f(x - e)[i]) / (2 * h)
        np.testing.assert_allclose(grad[i, p, c], fd, rtol=2e-3, atol=2e-6)
    direction = rng.normal(size=x.shape)
    fd = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
    np.testing.assert_allclose((grad * direction).sum(axis=(1, 2)), fd, rtol=2e-3, atol=2e-6)


def test_saliency_is_the_gradient_at_the_observed_base(real_tokens: np.ndarray) -> None:
    model = _small_model()
    tokens = real_tokens.copy()
    tokens[0, 50] = 0  # an N inside a sequence
    contributions, scores = saliency(model, tokens, batch_size=5)  # 12 rows: batches of 5, 5 and a padded 2
    sub = onehot_model(model)
    x = np.eye(5, dtype=np.float32)[tokens.astype(np.int64)]
    grad = input_gradients(lambda v: sub(v, training=False))(x)
    observed = np.take_along_axis(grad, tokens.astype(np.int64)[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(scores, observed, rtol=1e-5, atol=1e-7)
    assert contributions.shape == (12, 112, 4)
    bases = tokens > 0
    np.testing.assert_allclose(contributions.sum(axis=-1)[bases], scores[bases], rtol=1e-6, atol=1e-8)
    assert (np.count_nonzero(contributions, axis=-1) <= 1).all() and contributions[0, 50].tolist() == [0, 0, 0, 0]


def test_a_model_without_onehot_input_is_refused() -> None:
    tokens = keras.Input((112,), dtype="int32")
    model = keras.Model(tokens, keras.layers.Dense(1)(keras.ops.cast(tokens, "float32")))
    with pytest.raises(CrmlabError, match="exactly one onehot_input block; this one has 0"):
        onehot_model(model)


@pytest.mark.skipif(os.environ.get("CRMLAB_NESTED_BACKEND_RUN") == "1", reason="already the nested run")
@pytest.mark.skipif(importlib.util.find_spec(OTHER) is None, reason=f"{OTHER} not installed")
def test_saliency_tests_pass_on_the_other_backend() -> None:
    env = {**os.environ, "KERAS_BACKEND": OTHER, "CRMLAB_NESTED_BACKEND_RUN": "1", "JAX_ENABLE_X64": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",
            str(Path(__file__).relative_to(ROOT)),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "3 passed" in proc.stdout, proc.stdout[-2000:]  # the finite-difference test ran, not skipped
