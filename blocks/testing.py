"""Test kit for crmlab blocks: the contract checks every registered block must pass, callable from any test suite.

A plugin's own tests call :func:`check_block` on its block class::

    from crmlab.blocks.testing import check_block
    from my_plugin import GatedConv1D

    def test_gated_conv1d_meets_the_crmlab_contract() -> None:
        check_block(GatedConv1D)

The block's ``crmlab_example`` (``{"params": {...}, "inputs": [shape, ...]}``, see :mod:`crmlab.registry.core`)
supplies its parameters and per-example input shapes; the inputs are made from real yeast promoter sequences that
ship inside crmlab (``testing_sequences.tsv`` next to this module). The checks, on the active Keras backend:

* ports: ``crmlab_inputs`` / ``crmlab_outputs`` are well formed and match what ``call`` takes and returns;
* config: every constructor parameter appears, with the value given, in ``get_config()``, and ``from_config``
  rebuilds an equal config;
* forward: a model around the block runs on the real sequences (also with the optional inputs left out) and every
  output is finite;
* ``.keras`` file: saving and loading gives the same class and identical predictions;
* Keras' own layer harness (``keras.src.testing.TestCase.run_layer_test``, a private Keras API) with its training
  check (one compiled ``fit`` step) and mixed-precision check (under ``mixed_float16`` every output has the dtype
  ``compute_output_spec`` declares and every weight stays float32).

Then the same checks run on each other installed backend (TensorFlow, JAX) in a subprocess, since a process cannot
switch backends: ``python -m crmlab.blocks.testing module:Class [module:Class ...]`` with ``KERAS_BACKEND`` set. A
checked class must therefore be importable as ``module:qualname`` in a fresh interpreter.

Tested with Keras 3.15 (the range crmlab supports is ``keras>=3.8,<4``); when the installed Keras lacks the private
harness or its ``input_data``/``run_training_check``/``run_mixed_precision_check`` parameters, the harness check
fails with a one-line message.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import keras
import numpy as np

from crmlab.blocks.sequence import ALPHABET
from crmlab.registry import signature_params

__all__ = [
    "BACKENDS",
    "BackendCheck",
    "check_block",
    "check_blocks_on_backend",
    "example_inputs",
    "main",
    "other_backends_of",
    "real_sequences",
    "real_tokens",
]

BACKENDS = ("tensorflow", "jax")
"""The Keras backends the kit runs a block on, when installed."""

_HARNESS_PARAMS = ("input_data", "run_training_check", "run_mixed_precision_check")
_TESTED_KERAS = "3.15"


def real_sequences() -> list[str]:
    """The eight measured yeast promoter sequences shipped with crmlab (Vaishnav et al. 2022 test sets)."""
    text = resources.files("crmlab.blocks").joinpath("testing_sequences.tsv").read_text()
    rows = csv.DictReader((line for line in text.splitlines() if not line.startswith("#")), delimiter="\t")
    return [row["seq"] for row in rows]


def real_tokens(length: int = 112) -> np.ndarray:
    """The shipped sequences as ``(8, length)`` int32 tokens (N=0, A=1, C=2, G=3, T=4), N-padded or truncated at the
    3' end."""
    sequences = real_sequences()
    tokens = np.zeros((len(sequences), length), dtype="int32")
    for row, seq in enumerate(sequences):
        codes = [max(ALPHABET.find(base), 0) for base in seq.upper()[:length]]
        tokens[row, : len(codes)] = codes
    return tokens


def example_inputs(shapes: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Inputs of the given per-example shapes made from the real sequences.

    Args:
        shapes: one shape per input, without the batch axis. A 1-D shape ``(length,)`` gets int32 tokens; a 2-D
            shape ``(length, channels)`` gets float32 one-hot DNA, tiled along both axes to fit.

    Returns:
        One array per shape, each with a leading batch axis of 8.
    """
    out = []
    for shape in shapes:
        if len(shape) == 1:
            out.append(real_tokens(int(shape[0])))
            continue
        length, channels = (int(d) for d in shape)
        onehot = np.eye(len(ALPHABET), dtype="float32")[real_tokens(length)]
        out.append(np.ascontiguousarray(np.tile(onehot, (1, 1, -(-channels // len(ALPHABET))))[:, :, :channels]))
    return out


def check_block(cls: type, *, other_backends: Sequence[str] | None = None) -> None:
    """Run crmlab's contract checks on the block class ``cls`` (see the module docstring).

    Args:
        cls: a block class (a Keras layer decorated with ``crmlab.blocks.block``) declaring ``crmlab_example``.
        other_backends: backends to check in a subprocess besides the active one; default: every installed backend
            of :data:`BACKENDS` other than the active one. ``()`` checks the active backend only.

    Raises:
        AssertionError: a check failed; the message names the block, the check and the backend.
        RuntimeError: the installed Keras lacks the private layer-test harness the kit uses.
    """
    name = f"{cls.__module__}:{cls.__qualname__} on {keras.config.backend()}"
    params, shapes = _example(cls)
    _check_ports(cls, shapes, name)
    _check_config(cls, params, name)
    _check_model(cls, params, shapes, name)
    _check_keras_harness(cls, params, shapes, name)
    for backend in other_backends_of(other_backends):
        check_blocks_on_backend([cls], backend)


def other_backends_of(requested: Sequence[str] | None = None) -> list[str]:
    """The backends of ``requested`` other than the active one; ``None``: the other installed :data:`BACKENDS`."""
    active = keras.config.backend()
    if requested is not None:
        return [b for b in requested if b != active]
    return [b for b in BACKENDS if b != active and importlib.util.find_spec(b) is not None]


class BackendCheck:
    """:func:`check_block` on several classes in ONE subprocess with ``KERAS_BACKEND=backend``, started at once in
    the background; :meth:`wait` collects the result.

    The subprocess sees this process's ``sys.path``, so the classes must be importable by ``module:qualname``.

    Args:
        classes: block classes to check.
        backend: the Keras backend of the subprocess.

    Raises:
        ValueError: a class is not importable by name (defined inside a function or in ``__main__``).
    """

    def __init__(self, classes: Sequence[type], backend: str) -> None:
        self.backend = backend
        self.targets: list[str] = []
        for cls in classes:
            if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
                raise ValueError(f"{cls.__qualname__}: not importable by name, so it cannot be checked on {backend}")
            self.targets.append(f"{cls.__module__}:{cls.__qualname__}")
        env = {
            **os.environ,
            "KERAS_BACKEND": backend,
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
        }
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by wait(), read after the run)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "crmlab.blocks.testing", *self.targets],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float = 900) -> None:
        """Wait for the subprocess.

        Raises:
            AssertionError: a check failed (the message ends with the subprocess's output) or it timed out.
        """
        try:
            rc = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"block checks on {self.backend} timed out after {timeout} s") from None
        self._log.seek(0)
        output = self._log.read()
        self._log.close()
        if rc != 0:
            raise AssertionError(f"block checks failed on {self.backend}:\n{output[-6000:]}")

    def stop(self) -> None:
        """End the subprocess if it still runs and drop its output."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._log.close()


def check_blocks_on_backend(classes: Sequence[type], backend: str) -> None:
    """Run :func:`check_block` on every class of ``classes`` in ONE subprocess with ``KERAS_BACKEND=backend``.

    Raises:
        AssertionError: a check failed there (the message ends with the subprocess's output) or it timed out.
        ValueError: a class is not importable by name (defined inside a function or in ``__main__``).
    """
    BackendCheck(classes, backend).wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: check each ``module:Class`` on the active backend only; exit status 1 if any check fails."""
    parser = argparse.ArgumentParser(prog="python -m crmlab.blocks.testing", description=main.__doc__)
    parser.add_argument("targets", nargs="+", metavar="module:Class")
    args = parser.parse_args(argv)
    failed = 0
    for target in args.targets:
        module, _, qualname = target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        try:
            check_block(obj, other_backends=())
        except AssertionError as exc:
            failed += 1
            print(f"FAIL {target} on {keras.config.backend()}: {exc}", flush=True)
        else:
            print(f"ok {target} on {keras.config.backend()}", flush=True)
    return 1 if failed else 0


def _example(cls: type) -> tuple[dict[str, Any], list[list[int]]]:
    example = getattr(cls, "crmlab_example", None)
    assert isinstance(example, dict) and {"params", "inputs"} <= set(example), (
        f"{cls.__qualname__}: declares no crmlab_example = {{'params': {{...}}, 'inputs': [shape, ...]}}"
    )
    return dict(example["params"]), [list(s) for s in example["inputs"]]


def _ports(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(getattr(cls, "crmlab_inputs", ("x",))), tuple(getattr(cls, "crmlab_outputs", ("out",)))


def _check_ports(cls: type, shapes: list[list[int]], name: str) -> None:
    inputs, outputs = _ports(cls)
    assert inputs and outputs, f"{name}: needs at least one input and one output port"
    for port in (*inputs, *outputs):
        assert isinstance(port, str) and port.rstrip("?").isidentifier(), f"{name}: bad port name {port!r}"
    assert len(set(p.rstrip("?") for p in inputs)) == len(inputs), f"{name}: repeated input name in {inputs}"
    assert len(set(outputs)) == len(outputs), f"{name}: repeated output port in {outputs}"
    optional = [p.endswith("?") for p in inputs]
    assert optional == sorted(optional), f"{name}: optional inputs must come last, got {inputs}"
    required = optional.count(False)
    assert required <= len(shapes) <= len(inputs), (
        f"{name}: crmlab_example gives {len(shapes)} input shapes for inputs {inputs}"
    )


def _check_config(cls: type, params: dict[str, Any], name: str) -> None:
    layer = cls(**params)
    config = layer.get_config()
    for key in signature_params(cls):
        assert key in config, f"{name}: constructor parameter '{key}' missing from get_config()"
    for key, value in params.items():
        assert config[key] == value, f"{name}: get_config()['{key}'] = {config[key]!r}, the params gave {value!r}"
    assert type(layer).from_config(config).get_config() == config, f"{name}: from_config(get_config()) differs"


def _model(cls: type, params: dict[str, Any], shapes: list[list[int]]) -> keras.Model:
    inputs = [keras.Input(shape=tuple(s), dtype="int32" if len(s) == 1 else "float32") for s in shapes]
    feed = inputs[0] if len(inputs) == 1 else inputs
    outs = cls(**params, name="block")(feed)
    return keras.Model(feed, list(outs) if isinstance(outs, tuple) else outs)


def _predict(model: keras.Model, x: list[np.ndarray]) -> list[np.ndarray]:
    """Inference outputs of ``model`` on ``x``, called eagerly (cheaper than compiling ``predict`` for 8 rows)."""
    y = model(x if len(x) > 1 else x[0], training=False)
    return [keras.ops.convert_to_numpy(o) for o in (y if isinstance(y, list | tuple) else [y])]


def _check_model(cls: type, params: dict[str, Any], shapes: list[list[int]], name: str) -> None:
    """Forward pass on real sequences, with all example inputs and with the required ones only, and a ``.keras``
    round trip of the first model."""
    inputs, outputs = _ports(cls)
    required = sum(not p.endswith("?") for p in inputs)
    for n in sorted({len(shapes), required}, reverse=True):
        model = _model(cls, params, shapes[:n])
        symbolic = model.get_layer("block").output
        got = len(symbolic) if isinstance(symbolic, list | tuple) else 1
        assert got == len(outputs), f"{name}: call returns {got} outputs for the ports {outputs}"
        x = example_inputs(shapes[:n])
        before = _predict(model, x)
        for out in before:
            assert out.shape[0] == len(x[0]), f"{name}: output batch {out.shape[0]} for {len(x[0])} sequences"
            assert np.all(np.isfinite(out)), f"{name}: non-finite output on real sequences ({n} inputs)"
        if n == len(shapes):
            _check_keras_file(model, x, before, name)


def _check_keras_file(model: keras.Model, x: list[np.ndarray], before: list[np.ndarray], name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "block.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
    block_type = type(model.get_layer("block"))
    assert type(loaded.get_layer("block")) is block_type, f"{name}: .keras file loads as another class"
    for b, a in zip(before, _predict(loaded, x), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"{name}: predictions change after a .keras round trip")


def _check_keras_harness(cls: type, params: dict[str, Any], shapes: list[list[int]], name: str) -> None:
    try:
        from keras.src.testing import TestCase

        harness = TestCase("run_layer_test")
        accepted = inspect.signature(TestCase.run_layer_test).parameters
    except (ImportError, AttributeError, ValueError):
        accepted = {}
    if not all(p in accepted for p in _HARNESS_PARAMS):
        raise RuntimeError(
            f"crmlab.blocks.testing: Keras {keras.__version__} lacks keras.src.testing.TestCase.run_layer_test"
            f"({', '.join(_HARNESS_PARAMS)}); the kit is tested with Keras {_TESTED_KERAS}"
        )
    x = example_inputs(shapes)
    try:
        harness.run_layer_test(
            cls,
            init_kwargs=params,
            input_data=tuple(x) if len(x) > 1 else x[0],  # a tuple: TensorFlow's generator adapter rejects lists
            run_training_check=True,
            run_mixed_precision_check=True,
        )
    except AssertionError as exc:
        raise AssertionError(f"{name}: Keras layer test (training and mixed-precision checks): {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
