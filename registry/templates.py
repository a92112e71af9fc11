"""Built-in graph templates: functions ``template(**params) -> graph-spec document`` (``crmlab.templates`` group).

A template lets one parameter change repeated structure: search varies the U-Net ``depth`` of
:func:`crmnet_unet`, which writes out the matching encoder and decoder levels as explicit nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from crmlab.registry import defaults
from crmlab.registry.types import PositiveInt, Rate, Widths

__all__ = ["crmnet_unet"]


def crmnet_unet(
    length: PositiveInt = 112,
    depth: PositiveInt = 3,
    filters: PositiveInt = 128,
    encoder_filters: Widths | None = None,
    decoder_filters: PositiveInt | None = None,
    kernel_size: PositiveInt = defaults.KERNEL_SIZE,
    se_ratio: PositiveInt | None = defaults.SE_RATIO,
    dropout: Rate = defaults.ENCODER_DROPOUT,
    skips: bool = True,
    transformer: bool = True,
    position_mode: Literal["add", "multiply_sin"] = "multiply_sin",
    num_heads: PositiveInt = defaults.NUM_HEADS,
    key_dim: PositiveInt = defaults.KEY_DIM,
    ff_dim: PositiveInt = defaults.FF_DIM,
    transformer_dropout: Rate = defaults.TRANSFORMER_DROPOUT,
    branches: Widths = defaults.BRANCHES,
    stack_filters: Widths = defaults.STACK_FILTERS,
    head_units: Widths = defaults.HEAD_UNITS,
    head_dropout: Rate | Sequence[Rate] = defaults.HEAD_DROPOUT,
) -> dict[str, Any]:
    """CRMnet's U-Net family; the defaults give canonical CRMnet (``studies/graphs/crmnet.yaml``) node for node.

    Args:
        length: input length in tokens; must be divisible by ``2 ** depth``.
        depth: down-sampling levels; the encoder has ``depth + 1`` levels (the last one without down-sampling) and
            the decoder ``depth`` levels.
        filters: base width: the first half of the encoder levels (rounded up) get ``filters``, the rest
            ``2 * filters`` (CRMnet: 128, 128, 256, 256); decoders get ``filters``.
        encoder_filters: explicit widths of the ``depth + 1`` encoder levels, overriding ``filters``.
        decoder_filters: width of every decoder level (default ``filters``).
        kernel_size: width of every convolution.
        se_ratio: squeeze-and-excitation ratio everywhere; ``None`` turns SE off.
        dropout: dropout at the end of each encoder level.
        skips: U-Net skip connections from encoder to decoder levels.
        transformer: position encoding + transformer trunk at the bottom of the U.
        position_mode, num_heads, key_dim, ff_dim, transformer_dropout, branches: the trunk (see
            ``position_encoding`` and ``transformer_encoder``).
        stack_filters: the final ``se_conv_stack`` widths.
        head_units, head_dropout: the ``mlp_head``.

    Returns:
        A graph-spec document with explicit ``inputs``, ``nodes`` and ``outputs``.
    """
    if length % (2**depth):
        raise ValueError(f"depth: length {length} is not divisible by 2**{depth} = {2**depth}; use a smaller depth")
    levels = depth + 1
    widths = (
        list(encoder_filters)
        if encoder_filters is not None
        else [filters if i < (levels + 1) // 2 else 2 * filters for i in range(levels)]
    )
    if len(widths) != levels:
        raise ValueError(f"encoder_filters: needs depth + 1 = {levels} widths, got {len(widths)}")
    dec_width = decoder_filters if decoder_filters is not None else filters
    nodes: dict[str, Any] = {"onehot": {"block": "onehot_input", "inputs": ["seq"]}}
    prev = "onehot"
    for i, width in enumerate(widths, start=1):
        nodes[f"enc{i}"] = {
            "block": "se_conv_encoder",
            "inputs": [prev],
            "params": {
                "filters": width,
                "kernel_size": kernel_size,
                "se_ratio": se_ratio,
                "dropout": dropout,
                "downsample": i < levels,
            },
        }
        prev = f"enc{i}.out"
    if transformer:
        nodes["pos"] = {"block": "position_encoding", "inputs": [prev], "params": {"mode": position_mode}}
        nodes["trunk"] = {
            "block": "transformer_encoder",
            "inputs": ["pos"],
            "params": {
                "num_heads": num_heads,
                "key_dim": key_dim,
                "ff_dim": ff_dim,
                "dropout": transformer_dropout,
                "branches": list(branches),
            },
        }
        prev = "trunk"
    for k in range(1, depth + 1):
        skip = [f"enc{depth + 1 - k}.skip"] if skips else []
        nodes[f"dec{k}"] = {
            "block": "transpose_conv_decoder",
            "inputs": [prev, *skip],
            "params": {"filters": dec_width, "kernel_size": kernel_size, "se_ratio": se_ratio},
        }
        prev = f"dec{k}"
    nodes["convs"] = {
        "block": "se_conv_stack",
        "inputs": [prev],
        "params": {
            "filters": list(stack_filters),
            "kernel_size": kernel_size,
            "se_ratio": se_ratio,
            "batch_norm": False,
        },
    }
    nodes["head"] = {
        "block": "mlp_head",
        "inputs": ["convs"],
        "params": {
            "units": list(head_units),
            "dropout": head_dropout if isinstance(head_dropout, int | float) else list(head_dropout),
            "negative_slope": defaults.NEGATIVE_SLOPE,
        },
    }
    return {"inputs": {"seq": {"shape": [length], "dtype": "int32"}}, "nodes": nodes, "outputs": ["head"]}
