"""A Keras-free registry of plain Python blocks, so spec tests run in milliseconds."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from crmlab.registry import Registry
from crmlab.registry.templates import crmnet_unet


class Conv:
    """A stand-in conv block."""

    def __init__(self, filters: int, kernel_size: int = 3, se_ratio: int | None = 2, **kw: object) -> None:
        self.filters = filters


class Encoder(Conv):
    """A stand-in encoder with two ports."""

    crmlab_outputs = ("out", "skip")

    def __init__(self, filters: int, kernel_size: int = 11, se_ratio: int | None = 2, dropout: float = 0.1,
                 downsample: bool = True, **kw: object) -> None:  # fmt: skip
        super().__init__(filters)


class Decoder(Conv):
    """A stand-in decoder with an optional skip input."""

    crmlab_inputs = ("x", "skip?")


class Head:
    """A stand-in head."""

    def __init__(self, units: Sequence[int] = (8,), dropout: float | Sequence[float] = 0.0, **kw: object) -> None:
        self.units = units


class Free:
    """No type hints at all."""

    def __init__(self, anything=None, **kw):  # type: ignore[no-untyped-def]
        self.anything = anything


@pytest.fixture
def fake_blocks() -> Registry:
    reg = Registry("block")
    for name, cls in {"conv": Conv, "encoder": Encoder, "decoder": Decoder, "head": Head, "free": Free}.items():
        reg.register(name, cls, origin=f"tests ({cls.__name__})")
    reg.register("onehot_input", Free, origin="tests (Free)")
    return reg


@pytest.fixture
def fake_templates() -> Registry:
    reg = Registry("template")
    reg.register("crmnet_unet", crmnet_unet, origin="tests")
    return reg
