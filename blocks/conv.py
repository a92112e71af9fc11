"""Convolutional blocks of CRMnet: squeeze-and-excitation, U-Net encoder/decoder levels and the final conv stack."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from crmlab.blocks.base import Block, apply, block
from crmlab.registry import PositiveInt, Rate, Widths, defaults

__all__ = ["SEBlock", "SEConvEncoder", "SEConvStack", "TransposeConvDecoder", "conv_se_bn"]


@block()
class SEBlock(Block):
    """Squeeze-and-excitation: global average pool -> Dense(C // ratio, relu) -> Dense(C, sigmoid) -> rescale.

    Args:
        ratio: channel reduction of the squeeze (CRMnet: 2).

    Input shape: ``(batch, length, channels)``. Output shape: the same.
    """

    crmlab_example = {"params": {"ratio": 2}, "inputs": [[112, 8]]}

    def __init__(self, ratio: PositiveInt = defaults.SE_RATIO, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ratio = ratio

    def create(self, input_shape: Any) -> None:
        channels = int(input_shape[-1])
        self.squeeze = keras.layers.Dense(max(1, channels // self.ratio), activation="relu", dtype=self.dtype_policy)
        self.excite = keras.layers.Dense(channels, activation="sigmoid", dtype=self.dtype_policy)

    def call(self, x: Any, training: bool | None = None) -> Any:
        scale = self.excite(self.squeeze(ops.mean(x, axis=1)))
        return x * ops.expand_dims(scale, 1)


def conv_se_bn(
    filters: int, kernel_size: int, se_ratio: int | None, batch_norm: bool, activation: str, dtype: Any
) -> list[keras.layers.Layer]:
    """The layers of one ``Conv1D(same, he_normal) -> SE -> BatchNorm`` stage (SE and BatchNorm optional), all
    with the dtype policy ``dtype`` (the enclosing block's)."""
    layers: list[keras.layers.Layer] = [
        keras.layers.Conv1D(
            filters, kernel_size, padding="same", activation=activation, kernel_initializer="he_normal", dtype=dtype
        )
    ]
    if se_ratio is not None:
        layers.append(SEBlock(ratio=se_ratio, dtype=dtype))
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(dtype=dtype))
    return layers


@block(outputs=("out", "skip"))
class SEConvEncoder(Block):
    """One U-Net encoder level: 2 x [Conv1D -> SE -> BatchNorm] -> Dropout, then optional stride-2 down-sampling.

    Args:
        filters: channels of every convolution.
        kernel_size: convolution width (CRMnet: 11, about one transcription-factor site).
        se_ratio: squeeze-and-excitation ratio; ``None`` turns SE off.
        batch_norm: batch normalisation after each stage.
        dropout: dropout rate after the two stages.
        downsample: halve the length with a stride-2 ``Conv1D(filters, kernel_size)`` (not max-pooling).
        activation: activation of the convolutions.

    Input shape: ``(batch, length, channels)``. Outputs: ``out`` ``(batch, length / 2, filters)`` when
    down-sampling else ``(batch, length, filters)``; ``skip`` ``(batch, length, filters)``, taken before
    down-sampling.
    """

    crmlab_example = {"params": {"filters": 8, "kernel_size": 5}, "inputs": [[112, 5]]}

    def __init__(
        self,
        filters: PositiveInt,
        kernel_size: PositiveInt = defaults.KERNEL_SIZE,
        se_ratio: PositiveInt | None = defaults.SE_RATIO,
        batch_norm: bool = True,
        dropout: Rate = defaults.ENCODER_DROPOUT,
        downsample: bool = True,
        activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.se_ratio = filters, kernel_size, se_ratio
        self.batch_norm, self.dropout, self.downsample, self.activation = batch_norm, dropout, downsample, activation
        self.stages = [
            *conv_se_bn(filters, kernel_size, se_ratio, batch_norm, activation, self.dtype_policy),
            *conv_se_bn(filters, kernel_size, se_ratio, batch_norm, activation, self.dtype_policy),
        ]
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy) if dropout > 0 else None
        self.down = (
            keras.layers.Conv1D(
                filters,
                kernel_size,
                strides=2,
                padding="same",
                activation=activation,
                kernel_initializer="he_normal",
                dtype=self.dtype_policy,
            )
            if downsample
            else None
        )

    def call(self, x: Any, training: bool | None = None) -> tuple[Any, Any]:
        skip = apply(self.stages, x, training)
        if self.drop is not None:
            skip = self.drop(skip, training=training)
        out = self.down(skip) if self.down is not None else skip
        return out, skip

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, Any]:
        batch, length, _ = input_shape
        out_len = None if length is None else (-(-length // 2) if self.downsample else length)
        return (batch, out_len, self.filters), (batch, length, self.filters)


@block(inputs=("x", "skip?"))
class TransposeConvDecoder(Block):
    """One U-Net decoder level: Conv1DTranspose(stride 2) up-sampling, concatenation with the skip input, then
    2 x [Conv1D -> SE -> BatchNorm].

    Args:
        filters: channels of the transposed and plain convolutions.
        kernel_size: convolution width.
        se_ratio: squeeze-and-excitation ratio; ``None`` turns SE off.
        batch_norm: batch normalisation after each stage.
        activation: activation of the plain convolutions (the transposed one is linear).

    Inputs: ``x`` ``(batch, length, channels)`` and optionally ``skip`` ``(batch, 2 * length, skip_channels)``
    (without it the block only up-samples: the "no U-Net skips" ablation). Output shape:
    ``(batch, 2 * length, filters)``.
    """

    crmlab_example = {"params": {"filters": 8, "kernel_size": 5}, "inputs": [[56, 8], [112, 4]]}

    def __init__(
        self,
        filters: PositiveInt,
        kernel_size: PositiveInt = defaults.KERNEL_SIZE,
        se_ratio: PositiveInt | None = defaults.SE_RATIO,
        batch_norm: bool = True,
        activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.se_ratio = filters, kernel_size, se_ratio
        self.batch_norm, self.activation = batch_norm, activation
        self.up = keras.layers.Conv1DTranspose(filters, kernel_size, strides=2, padding="same", dtype=self.dtype_policy)
        self.concat = keras.layers.Concatenate(axis=-1, dtype=self.dtype_policy)
        self.stages = [
            *conv_se_bn(filters, kernel_size, se_ratio, batch_norm, activation, self.dtype_policy),
            *conv_se_bn(filters, kernel_size, se_ratio, batch_norm, activation, self.dtype_policy),
        ]

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if isinstance(inputs, list | tuple):
            x, *rest = inputs
        else:
            x, rest = inputs, []
        y = self.up(x)
        if rest:
            y = self.concat([y, rest[0]])
        return apply(self.stages, y, training)


@block()
class SEConvStack(Block):
    """A stack of [Conv1D -> SE (-> BatchNorm)] stages, one per entry of ``filters`` (CRMnet's final 128/64/32).

    Args:
        filters: channels of each stage, in order.
        kernel_size: convolution width.
        se_ratio: squeeze-and-excitation ratio; ``None`` turns SE off.
        batch_norm: batch normalisation after each stage (CRMnet: none).
        activation: activation of the convolutions.

    Input shape: ``(batch, length, channels)``. Output shape: ``(batch, length, filters[-1])``.
    """

    crmlab_example = {"params": {"filters": [8, 4], "kernel_size": 5}, "inputs": [[112, 5]]}

    def __init__(
        self,
        filters: Widths = defaults.STACK_FILTERS,
        kernel_size: PositiveInt = defaults.KERNEL_SIZE,
        se_ratio: PositiveInt | None = defaults.SE_RATIO,
        batch_norm: bool = False,
        activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.se_ratio = list(filters), kernel_size, se_ratio
        self.batch_norm, self.activation = batch_norm, activation
        self.stages = [
            layer
            for f in self.filters
            for layer in conv_se_bn(f, kernel_size, se_ratio, batch_norm, activation, self.dtype_policy)
        ]

    def call(self, x: Any, training: bool | None = None) -> Any:
        return apply(self.stages, x, training)
