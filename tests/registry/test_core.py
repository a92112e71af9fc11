"""Registry contract: registration, duplicates, lazy loading, failures, signatures."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import pytest

from crmlab.registry import Registry, core
from crmlab.registry.core import BlockLoadError, DuplicateNameError


def test_register_and_get_reads_ports_and_params(fake_blocks: Registry) -> None:
    info = fake_blocks.get("encoder")
    assert info.outputs == ("out", "skip") and info.inputs == ("x",)
    assert list(info.params) == ["filters", "kernel_size", "se_ratio", "dropout", "downsample"]
    assert info.params["filters"].required and info.params["filters"].annotation is int
    assert info.params["kernel_size"].default == 11
    dec = fake_blocks.get("decoder")
    assert (dec.min_inputs, dec.max_inputs, dec.input_names) == (1, 2, ("x", "skip"))


def test_duplicate_names_raise_naming_both_origins() -> None:
    reg = Registry()
    reg.register("b", dict, origin="pkg-one 1.0 (one:B)")
    with pytest.raises(DuplicateNameError, match=r"'b'.*pkg-one 1.0 \(one:B\).*pkg-two 2.0 \(two:B\)"):
        reg.register("b", list, origin="pkg-two 2.0 (two:B)")


def test_decorator_form_registers() -> None:
    reg = Registry()

    @reg.register("mine")
    def factory(units: int = 3) -> dict[str, Any]:
        return {"units": units}

    assert reg.get("mine").factory is factory and "mine" in reg and list(reg) == ["mine"]


def test_entry_points_load_lazily_and_failures_are_recorded() -> None:
    reg = Registry()
    reg.add_entry_point(metadata.EntryPoint("good", "crmlab.registry.templates:crmnet_unet", core.TEMPLATE_GROUP))
    reg.add_entry_point(metadata.EntryPoint("bad", "no_such_module_xyz:Thing", core.BLOCK_GROUP))
    assert reg.names() == ["bad", "good"]
    assert reg.failed == {}
    infos = reg.load_all()
    assert [i.name for i in infos] == ["good"]
    assert "bad" in reg.failed and "ModuleNotFoundError" in reg.failed["bad"].error
    with pytest.raises(BlockLoadError, match=r"block .bad. from .* failed to load: ModuleNotFoundError"):
        reg.get("bad")


def test_builtins_are_discovered_through_entry_points() -> None:
    names = set(core.blocks().names())
    assert {"se_conv_encoder", "transformer_encoder", "mlp_head", "onehot_input"} <= names
    assert "crmnet_unet" in core.templates()
    assert core.blocks().origin("se_conv_encoder").startswith("crmlab ")
