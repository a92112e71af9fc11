"""CRMnet written plainly in Keras 3 (functional API, stock layers only), independent of crmlab's blocks.

It is the reference of ``bench/overhead.py``: the same architecture as ``studies/graphs/crmnet.yaml`` (34,170,289
parameters with the defaults) and, with :data:`QUICK`, as the ``crmnet_unet`` template with those parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops


def squeeze_excite(x: keras.KerasTensor, ratio: int = 2) -> keras.KerasTensor:
    """Squeeze-and-excitation of ``x`` ``(batch, length, channels)``."""
    channels = x.shape[-1]
    scale = layers.GlobalAveragePooling1D()(x)
    scale = layers.Dense(channels // ratio, activation="relu")(scale)
    scale = layers.Dense(channels, activation="sigmoid")(scale)
    return layers.Multiply()([x, layers.Reshape((1, channels))(scale)])


def conv_se(x: keras.KerasTensor, filters: int, kernel_size: int, batch_norm: bool = True) -> keras.KerasTensor:
    """Conv1D (same, relu, he_normal) -> SE -> BatchNorm."""
    x = layers.Conv1D(filters, kernel_size, padding="same", activation="relu", kernel_initializer="he_normal")(x)
    x = squeeze_excite(x)
    return layers.BatchNormalization()(x) if batch_norm else x


def encoder_block(
    x: keras.KerasTensor, filters: int, kernel_size: int, downsample: bool
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Two conv-SE-BN stages and dropout (the skip), then a stride-2 convolution when down-sampling."""
    skip = conv_se(conv_se(x, filters, kernel_size), filters, kernel_size)
    skip = layers.Dropout(0.1)(skip)
    if not downsample:
        return skip, skip
    out = layers.Conv1D(
        filters, kernel_size, strides=2, padding="same", activation="relu", kernel_initializer="he_normal"
    )(skip)
    return out, skip


def transformer_block(x: keras.KerasTensor, num_heads: int, key_dim: int, ff_dim: int) -> keras.KerasTensor:
    """Post-LayerNorm encoder block: self-attention and feed-forward, each with dropout and a residual."""
    width = x.shape[-1]
    attended = layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim)(x, x)
    x = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x, layers.Dropout(0.1)(attended)]))
    ff = layers.Dense(width)(layers.Dense(ff_dim, activation="relu")(x))
    return layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x, layers.Dropout(0.1)(ff)]))


def build_crmnet(
    filters: int = 128,
    kernel_size: int = 11,
    num_heads: int = 12,
    key_dim: int = 256,
    ff_dim: int = 128,
    branches: Sequence[int] = (1, 2, 2, 2, 1),
    stack_filters: Sequence[int] = (128, 64, 32),
    head_units: Sequence[int] = (256, 128, 64, 32),
    head_dropout: Sequence[float] = (0.2, 0.2, 0.1, 0.1),
    length: int = 112,
) -> keras.Model:
    """CRMnet: tokens ``(batch, length)`` int32 -> expression ``(batch, 1)`` float32.

    One-hot (N, A, C, G, T) -> 4 encoder levels (``filters``, ``filters``, ``2 * filters``, ``2 * filters``; the
    first three halve the length) -> multiply by ``sin(i * 111 / L)`` -> transformer stages of ``branches``
    parallel blocks (summed) -> 3 decoder levels (transposed convolution, concatenated skip, two conv-SE-BN) ->
    conv-SE stack -> MLP head with LeakyReLU(0.1).
    """
    tokens = keras.Input((length,), dtype="int32", name="seq")
    clean = ops.where((tokens >= 0) & (tokens < 5), tokens, ops.zeros_like(tokens))
    x = ops.one_hot(clean, 5, dtype=keras.config.dtype_policy().compute_dtype)

    skips = []
    for i, width in enumerate((filters, filters, 2 * filters, 2 * filters)):
        x, skip = encoder_block(x, width, kernel_size, downsample=i < 3)
        skips.append(skip)

    steps = x.shape[1]
    sine = np.sin(np.arange(steps) * (111.0 / steps)).reshape(1, steps, 1)
    x = x * ops.cast(sine, x.dtype)
    for n in branches:
        outs = [transformer_block(x, num_heads, key_dim, ff_dim) for _ in range(n)]
        x = outs[0] if n == 1 else layers.Add()(outs)

    for skip in reversed(skips[:3]):
        x = layers.Conv1DTranspose(filters, kernel_size, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skip])
        x = conv_se(conv_se(x, filters, kernel_size), filters, kernel_size)
    for width in stack_filters:
        x = conv_se(x, width, kernel_size, batch_norm=False)

    x = layers.Flatten()(x)
    for units, rate in zip(head_units, head_dropout, strict=True):
        x = layers.Dropout(rate)(layers.LeakyReLU(negative_slope=0.1)(layers.Dense(units)(x)))
    out = layers.Dense(1, dtype="float32")(x)
    return keras.Model(tokens, out, name="crmnet_keras")


QUICK = {
    "filters": 8,
    "num_heads": 1,
    "key_dim": 8,
    "ff_dim": 8,
    "branches": (1,),
    "stack_filters": (8,),
    "head_units": (8,),
    "head_dropout": (0.1,),
}
"""``bench/overhead.py --quick``: CRMnet's four encoder and three decoder levels at width 8, one transformer block,
one stack convolution and one head layer (the template's ``crmnet_unet`` with these parameters)."""
