"""Input-side blocks: token one-hot encoding and position encodings."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from annotated_types import Ge
from keras import ops

from crmlab.blocks.base import Block, block

__all__ = ["ALPHABET", "OneHotInput", "PositionEncoding", "ReverseComplement"]

ALPHABET = "NACGT"
"""Token order of crmlab and CRMnet: 0 = N (and any unknown base), 1 = A, 2 = C, 3 = G, 4 = T."""


@block()
class OneHotInput(Block):
    """Integer tokens -> one-hot channels, in CRMnet's order N, A, C, G, T.

    Tokens outside ``[0, num_tokens)`` are treated as N (channel 0), so an unknown base is never an error here.

    Args:
        num_tokens: alphabet size (5 for N, A, C, G, T).

    Input shape: ``(batch, length)`` integers. Output shape: ``(batch, length, num_tokens)`` floats.
    """

    crmlab_example = {"params": {}, "inputs": [[112]]}

    def __init__(self, num_tokens: Annotated[int, Ge(2)] = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_tokens = num_tokens

    def build(self, input_shape: Any) -> None:
        if len(input_shape) != 2:
            raise ValueError(f"expects integer tokens of shape (batch, length), got shape {tuple(input_shape)}")
        self.built = True

    def call(self, tokens: Any) -> Any:
        t = ops.cast(tokens, "int32")
        t = ops.where((t >= 0) & (t < self.num_tokens), t, ops.zeros_like(t))
        return ops.one_hot(t, self.num_tokens, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (*input_shape, self.num_tokens)


@block()
class ReverseComplement(Block):
    """Reverse complement of one-hot DNA in crmlab's channel order N, A, C, G, T (N stays N); no weights.

    A model that averages its predictions for ``x`` and ``ReverseComplement()(x)`` is strand-symmetric (see
    :func:`crmlab.blocks.assemble.reverse_complement_average`). Padding N at the 3' end moves to the 5' end, exactly as
    the reverse-complement augmentation of training does it on tokens.

    Input shape: ``(batch, length, 5)`` one-hot. Output shape: the same.
    """

    crmlab_example = {"params": {}, "inputs": [[112, 5]]}

    _CHANNELS = (0, 4, 3, 2, 1)  # N A C G T -> N T G C A

    def build(self, input_shape: Any) -> None:
        if len(input_shape) != 3 or input_shape[-1] != len(ALPHABET):
            raise ValueError(f"expects one-hot DNA of shape (batch, length, 5), got shape {tuple(input_shape)}")
        self.built = True

    def call(self, x: Any) -> Any:
        return ops.take(ops.flip(x, axis=1), list(self._CHANNELS), axis=2)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


@block()
class PositionEncoding(Block):
    """Position information for a sequence of tokens; no weights.

    Args:
        mode: ``"add"`` adds the sinusoidal encoding of Vaswani et al. (what the CRMnet paper describes);
            ``"multiply_sin"`` multiplies token ``i`` of ``L`` by ``sin(i * span / L)``, what the CRMnet reference
            code does (canonical CRMnet; its first token is zeroed).
        span: the ``span`` of ``"multiply_sin"`` (reference code: 111).
        max_wavelength: longest wavelength of ``"add"``.

    Input shape: ``(batch, length, channels)``. Output shape: the same.
    """

    crmlab_example = {"params": {"mode": "add"}, "inputs": [[14, 16]]}

    def __init__(
        self,
        mode: Literal["add", "multiply_sin"] = "add",
        span: float = 111.0,
        max_wavelength: float = 10000.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("add", "multiply_sin"):
            raise ValueError(f"mode: must be 'add' or 'multiply_sin', got {mode!r}")
        self.mode, self.span, self.max_wavelength = mode, span, max_wavelength

    def build(self, input_shape: Any) -> None:
        self.built = True

    def call(self, x: Any) -> Any:
        length, channels = x.shape[1], x.shape[2]
        pos = ops.arange(length, dtype="float32")
        if self.mode == "multiply_sin":
            scale = ops.sin(pos * (self.span / length))
            return x * ops.cast(ops.reshape(scale, (1, length, 1)), x.dtype)
        dims = ops.arange(channels, dtype="float32")
        rates = ops.exp(-(2.0 * ops.floor(dims / 2.0) / channels) * math.log(self.max_wavelength))
        angles = ops.expand_dims(pos, 1) * ops.expand_dims(rates, 0)
        even = ops.expand_dims(ops.equal(ops.mod(ops.arange(channels), 2), 0), 0)
        encoding = ops.where(even, ops.sin(angles), ops.cos(angles))
        return x + ops.cast(ops.expand_dims(encoding, 0), x.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape
