"""Output heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from crmlab.blocks.base import Block, apply, block
from crmlab.registry.types import PositiveInt, Rate, Widths


@block()
class MLPHead(Block):
    """Flatten -> [Dense -> LeakyReLU -> Dropout] per hidden layer -> Dense(output_units, linear).

    Args:
        units: hidden layer widths (CRMnet: 256, 128, 64, 32).
        dropout: one rate for all hidden layers, or one per layer (CRMnet: 0.2, 0.2, 0.1, 0.1).
        negative_slope: LeakyReLU slope (CRMnet: 0.1).
        output_units: predicted values per sequence.

    Input shape: ``(batch, length, channels)`` (or any rank >= 2). Output shape: ``(batch, output_units)``,
    always float32 so mixed-precision training keeps a float32 loss.
    """

    crmlab_example = {"params": {"units": [8, 4], "dropout": [0.1, 0.0]}, "inputs": [[112, 5]]}

    def __init__(
        self,
        units: Widths = (256, 128, 64, 32),
        dropout: Rate | Sequence[Rate] = (0.2, 0.2, 0.1, 0.1),
        negative_slope: float = 0.1,
        output_units: PositiveInt = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        rates = [float(dropout)] * len(units) if isinstance(dropout, int | float) else [float(d) for d in dropout]
        if len(rates) != len(units):
            raise ValueError(f"dropout: needs one rate per hidden layer ({len(units)}), got {len(rates)}")
        self.units, self.dropout = list(units), dropout if isinstance(dropout, int | float) else rates
        self.negative_slope, self.output_units = negative_slope, output_units
        self.hidden: list[keras.layers.Layer] = [keras.layers.Flatten()]
        for u, r in zip(self.units, rates, strict=True):
            self.hidden += [keras.layers.Dense(u), keras.layers.LeakyReLU(negative_slope=negative_slope)]
            if r > 0:
                self.hidden.append(keras.layers.Dropout(r))
        self.out = keras.layers.Dense(output_units, dtype="float32")

    def call(self, x: Any, training: bool | None = None) -> Any:
        return self.out(apply(self.hidden, x, training))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, int]:
        return (input_shape[0], self.output_units)
