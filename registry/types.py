"""Constrained parameter types for block and template signatures.

Constraints written in a type hint are checked with the rest of the spec, before any Keras object is built, and
the error names the parameter: ``nodes.enc2.params.se_ratio: se_conv_encoder expects int >= 1, got int 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from annotated_types import Ge, Lt, MinLen

__all__ = ["PositiveInt", "Rate", "Widths"]

PositiveInt = Annotated[int, Ge(1)]
"""An integer >= 1 (filters, kernel sizes, heads, ratios)."""

Rate = Annotated[float, Ge(0), Lt(1)]
"""A dropout rate in [0, 1)."""

Widths = Annotated[Sequence[PositiveInt], MinLen(1)]
"""A non-empty list of positive integers (layer widths, stage sizes)."""
