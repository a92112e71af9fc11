"""Output heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from crmlab.blocks.base import Block, apply, block
from crmlab.registry import PositiveInt, Rate, Widths, defaults

__all__ = ["MLPHead"]


@block()
class MLPHead(Block):
    """Flatten -> [Dense -> LeakyReLU -> Dropout] per hidden layer -> Dense(output_units, linear).

    Args:
        units: hidden layer widths (CRMnet: 256, 128, 64, 32).
        dropout: one rate for all hidden layers, or one per layer (CRMnet: 0.2, 0.2, 0.1, 0.1).
        negative_slope: LeakyReLU slope (CRMnet: 0.1).
        output_units: predicted values per sequence.

    Input shape: ``(batch, length, channels)`` (or any rank >= 2). Output shape: ``(batch, output_units)``,
    always float32 (the last Dense has a float32 policy) so mixed-precision training keeps a float32 loss; the
    hidden layers follow the block's dtype policy.
    """

    crmlab_example = {"params": {"units": [8, 4], "dropout": [0.1, 0.0]}, "inputs": [[112, 5]]}

    def __init__(
        self,
        units: Widths = defaults.HEAD_UNITS,
        dropout: Rate | Sequence[Rate] = defaults.HEAD_DROPOUT,
        negative_slope: float = defaults.NEGATIVE_SLOPE,
        output_units: PositiveInt = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        rates = [float(dropout)] * len(units) if isinstance(dropout, int | float) else [float(d) for d in dropout]
        if len(rates) != len(units):
            raise ValueError(f"dropout: needs one rate per hidden layer ({len(units)}), got {len(rates)}")
        self.units, self.dropout = list(units), dropout if isinstance(dropout, int | float) else rates
        self.negative_slope, self.output_units = negative_slope, output_units
        policy = self.dtype_policy
        self.hidden: list[keras.layers.Layer] = [keras.layers.Flatten(dtype=policy)]
        for u, r in zip(self.units, rates, strict=True):
            self.hidden += [
                keras.layers.Dense(u, dtype=policy),
                keras.layers.LeakyReLU(negative_slope=negative_slope, dtype=policy),
            ]
            if r > 0:
                self.hidden.append(keras.layers.Dropout(r, dtype=policy))
        self.out = keras.layers.Dense(output_units, dtype="float32")

    def call(self, x: Any, training: bool | None = None) -> Any:
        return self.out(apply(self.hidden, x, training))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, int]:
        return (input_shape[0], self.output_units)

    def compute_output_spec(self, x: Any, training: bool | None = None) -> keras.KerasTensor:
        """The output is float32 under every dtype policy: the last Dense computes in float32."""
        return keras.KerasTensor(self.compute_output_shape(x.shape), dtype=self.out.compute_dtype)
