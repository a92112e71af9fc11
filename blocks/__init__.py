"""crmlab's built-in blocks and the plugin API: Keras 3 layers written with ``keras.ops`` only, registered through
the ``crmlab.blocks`` entry-point group (see :mod:`crmlab.registry.core` for the contract).

A plugin writes ``from crmlab.blocks import Block, block``, and its tests check each block against crmlab's contract
with :func:`crmlab.blocks.testing.check_block`. Importing this package does not import Keras (the backend is chosen
first); ``Block`` and ``block`` are loaded from :mod:`crmlab.blocks.base` on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Block", "block"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from crmlab.blocks import base

        return getattr(base, name)
    raise AttributeError(f"module 'crmlab.blocks' has no attribute {name!r}")
