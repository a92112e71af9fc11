"""The transformer trunk of CRMnet: post-LayerNorm encoder blocks wired in sequential or parallel stages."""

from __future__ import annotations

from typing import Any

import keras

from crmlab.blocks.base import Block, block
from crmlab.registry import PositiveInt, Rate, Widths, defaults

__all__ = ["TransformerEncoder"]


class _EncoderBlock(keras.layers.Layer):
    """Multi-head self-attention + feed-forward, each with dropout, residual and post-LayerNorm; every sub-layer
    has this layer's dtype policy."""

    def __init__(
        self, width: int, num_heads: int, key_dim: int, ff_dim: int, dropout: float, epsilon: float, **kw: Any
    ):
        super().__init__(**kw)
        policy = self.dtype_policy
        self.attention = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim, dtype=policy)
        self.ff_in = keras.layers.Dense(ff_dim, activation="relu", dtype=policy)
        self.ff_out = keras.layers.Dense(width, dtype=policy)
        self.norm1 = keras.layers.LayerNormalization(epsilon=epsilon, dtype=policy)
        self.norm2 = keras.layers.LayerNormalization(epsilon=epsilon, dtype=policy)
        self.drop1 = keras.layers.Dropout(dropout, dtype=policy)
        self.drop2 = keras.layers.Dropout(dropout, dtype=policy)

    def build(self, input_shape: Any) -> None:
        self.attention.build(input_shape, input_shape)
        self.norm1.build(input_shape)
        self.ff_in.build(input_shape)
        self.ff_out.build((*input_shape[:-1], self.ff_in.units))
        self.norm2.build(input_shape)
        self.built = True

    def call(self, x: Any, training: bool | None = None) -> Any:
        x = self.norm1(x + self.drop1(self.attention(x, x, training=training), training=training))
        return self.norm2(x + self.drop2(self.ff_out(self.ff_in(x)), training=training))


@block()
class TransformerEncoder(Block):
    """Stages of transformer encoder blocks; the blocks of one stage run in parallel on the same input and are summed.

    CRMnet's trunk is ``branches: [1, 2, 2, 2, 1]``: one block, three stages of two parallel blocks, one block
    (8 blocks). A plain stack of ``n`` blocks is ``branches: [1, 1, ..., 1]``.

    Args:
        num_heads: attention heads.
        key_dim: size of each head's query/key/value projection (CRMnet: 256, i.e. 12 x 256 wide).
        ff_dim: hidden units of the feed-forward sub-layer.
        dropout: dropout after attention and after the feed-forward sub-layer.
        branches: number of parallel blocks in each stage.
        epsilon: LayerNormalization epsilon.

    Input shape: ``(batch, length, channels)``. Output shape: the same.
    """

    crmlab_example = {"params": {"num_heads": 2, "key_dim": 4, "ff_dim": 8, "branches": [2]}, "inputs": [[14, 8]]}

    def __init__(
        self,
        num_heads: PositiveInt = defaults.NUM_HEADS,
        key_dim: PositiveInt = defaults.KEY_DIM,
        ff_dim: PositiveInt = defaults.FF_DIM,
        dropout: Rate = defaults.TRANSFORMER_DROPOUT,
        branches: Widths = defaults.BRANCHES,
        epsilon: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_heads, self.key_dim, self.ff_dim, self.dropout = num_heads, key_dim, ff_dim, dropout
        self.branches, self.epsilon = list(branches), epsilon

    def create(self, input_shape: Any) -> None:
        width = int(input_shape[-1])
        self.stages = [
            [
                _EncoderBlock(
                    width,
                    self.num_heads,
                    self.key_dim,
                    self.ff_dim,
                    self.dropout,
                    self.epsilon,
                    dtype=self.dtype_policy,
                )
                for _ in range(n)
            ]
            for n in self.branches
        ]

    def call(self, x: Any, training: bool | None = None) -> Any:
        for stage in self.stages:
            outs = [blk(x, training=training) for blk in stage]
            x = outs[0]
            for o in outs[1:]:
                x = x + o
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape
