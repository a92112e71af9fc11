"""CRMnet's parameter values, the one source for the defaults of the built-in blocks and of :func:`crmnet_unet`.

The blocks' constructors (:mod:`crmlab.blocks`) and the template (:mod:`crmlab.registry.templates`) both take their
defaults from here, so canonical CRMnet is written down once. This module imports nothing from Keras.
"""

from __future__ import annotations

__all__ = [
    "BRANCHES",
    "ENCODER_DROPOUT",
    "FF_DIM",
    "HEAD_DROPOUT",
    "HEAD_UNITS",
    "KERNEL_SIZE",
    "KEY_DIM",
    "NEGATIVE_SLOPE",
    "NUM_HEADS",
    "SE_RATIO",
    "STACK_FILTERS",
    "TRANSFORMER_DROPOUT",
]

KERNEL_SIZE = 11
"""Width of every convolution (about one transcription-factor site)."""

SE_RATIO = 2
"""Squeeze-and-excitation channel reduction."""

ENCODER_DROPOUT = 0.1
"""Dropout at the end of each U-Net encoder level."""

STACK_FILTERS = (128, 64, 32)
"""Widths of the final ``se_conv_stack``."""

NUM_HEADS = 12
"""Attention heads of each transformer block."""

KEY_DIM = 256
"""Query/key/value size of each attention head."""

FF_DIM = 128
"""Hidden units of each transformer block's feed-forward sub-layer."""

TRANSFORMER_DROPOUT = 0.1
"""Dropout after attention and after the feed-forward sub-layer."""

BRANCHES = (1, 2, 2, 2, 1)
"""Parallel transformer blocks per stage: one, three stages of two, one."""

HEAD_UNITS = (256, 128, 64, 32)
"""Hidden widths of the ``mlp_head``."""

HEAD_DROPOUT = (0.2, 0.2, 0.1, 0.1)
"""Dropout after each hidden layer of the ``mlp_head``."""

NEGATIVE_SLOPE = 0.1
"""LeakyReLU slope of the ``mlp_head``."""
