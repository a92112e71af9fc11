"""The contract every registered block must meet, checked with the public kit :mod:`crmlab.blocks.testing`: adding a
block to the registry adds it to these tests.

Each block (built-in or installed plugin) is checked in this process on the active Keras backend, and all of them
together in one subprocess on the other installed backend, started in the background when the module's first test
runs so that it overlaps the in-process checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import keras
import pytest

from crmlab.blocks import Block, block
from crmlab.blocks.testing import BackendCheck, check_block, other_backends_of
from crmlab.registry import core

BLOCKS = core.blocks().names()
BUILTIN = {
    "onehot_input",
    "reverse_complement",
    "se_block",
    "se_conv_encoder",
    "position_encoding",
    "transformer_encoder",
    "transpose_conv_decoder",
    "se_conv_stack",
    "mlp_head",
}
OTHER_BACKEND_TEST = "test_every_block_passes_on_the_other_backends"
# tests/test_backends.py reruns this file on the other backend: that nested run need not come back here.
NESTED = os.environ.get("CRMLAB_NESTED_BACKEND_RUN") == "1"


@pytest.fixture(scope="module", autouse=True)
def other_backend_checks(request: pytest.FixtureRequest) -> Iterator[list[BackendCheck]]:
    """Background checks of every block on each other installed backend, started only when the test that waits for
    them was collected."""
    wanted = not NESTED and any(item.name == OTHER_BACKEND_TEST for item in request.session.items)
    factories = [core.blocks().get(name).factory for name in BLOCKS]
    checks = [BackendCheck(factories, backend) for backend in other_backends_of()] if wanted else []
    yield checks
    for check in checks:
        check.stop()


def test_registry_lists_the_builtin_blocks() -> None:
    assert set(BLOCKS) >= BUILTIN


@pytest.mark.parametrize("name", BLOCKS)
def test_block_meets_the_contract(name: str) -> None:
    check_block(core.blocks().get(name).factory, other_backends=())


@pytest.mark.skipif(NESTED, reason="the outer run checks the other backend")
def test_every_block_passes_on_the_other_backends(other_backend_checks: list[BackendCheck]) -> None:
    if not other_backend_checks:
        pytest.skip("no other Keras backend installed")
    for check in other_backend_checks:
        check.wait()


@block(package="crmlab_contract_tests")
class IgnoresDtypePolicy(Block):
    """A Dense created without the block's dtype policy: float32 output although the block declares float16."""

    crmlab_example = {"params": {}, "inputs": [[16, 5]]}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(5)

    def call(self, x: Any, training: bool | None = None) -> Any:
        return self.dense(x)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def test_the_kit_catches_a_sub_layer_that_ignores_the_dtype_policy() -> None:
    with pytest.raises(AssertionError, match=r"mixed-precision checks\): expected output dtype float16, got float32"):
        check_block(IgnoresDtypePolicy, other_backends=())
