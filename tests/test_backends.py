"""Runs the block contract and block tests again on the other Keras backend (JAX <-> TensorFlow)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]
OTHER = "jax" if keras.config.backend() == "tensorflow" else "tensorflow"
MODULE = {"jax": "jax", "tensorflow": "tensorflow"}[OTHER]
SKIP = "not test_block_meets_the_contract"
"""tests/blocks' per-block contract test, which the outer run already runs on the other backend."""


@pytest.mark.skipif(os.environ.get("CRMLAB_NESTED_BACKEND_RUN") == "1", reason="already the nested run")
@pytest.mark.skipif(importlib.util.find_spec(MODULE) is None, reason=f"{MODULE} not installed (pip install '.[dev]')")
def test_block_tests_pass_on_the_other_backend() -> None:
    env = {**os.environ, "KERAS_BACKEND": OTHER, "CRMLAB_NESTED_BACKEND_RUN": "1"}
    proc = subprocess.run(
        # in this test's process only (-n 0): the suite's other workers already use the other cores, and two more
        # xdist workers would each import both backends again (a quarter more CPU time for the same tests). The
        # per-block contract is left out: tests/blocks/test_contract.py already runs it on this backend for every
        # registered block (test_every_block_passes_on_the_other_backends, through the plugin kit's BackendCheck).
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-k", SKIP, "tests/blocks"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
