"""The ``block`` decorator and the shared base layer of crmlab's blocks."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import keras

__all__ = ["Block", "apply", "block"]

T = TypeVar("T", bound=type)


def block(
    inputs: Sequence[str] = ("x",), outputs: Sequence[str] = ("out",), package: str = "crmlab"
) -> Callable[[T], T]:
    """Mark a Keras layer class as a crmlab block.

    Declares its input names (a trailing ``?`` marks an optional one) and output ports, and registers it with
    Keras serialisation under ``package`` so ``.keras`` files load it back. Registration *in crmlab* happens through
    the ``crmlab.blocks`` entry point that names the class, so third-party plugins use this decorator with their
    own ``package`` and declare an entry point.
    """

    def wrap(cls: T) -> T:
        cls.crmlab_inputs = tuple(inputs)
        cls.crmlab_outputs = tuple(outputs)
        return keras.saving.register_keras_serializable(package=package, name=cls.__name__)(cls)

    return wrap


class Block(keras.layers.Layer):
    """Base layer: builds every sub-layer by tracing ``call`` on symbolic inputs of the given shape.

    Sub-classes create the sub-layers whose size depends on the input in :meth:`create` and everything else in
    ``__init__``; after :meth:`build` every weight exists, which is what ``.keras`` loading needs. Constructor
    keyword arguments are the config: each is stored as the attribute of the same name, and :meth:`get_config`
    returns them all.
    """

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for name in inspect.signature(type(self).__init__).parameters:
            if name not in ("self", "kwargs"):
                config[name] = getattr(self, name)
        return config

    def create(self, input_shape: Any) -> None:
        """Create sub-layers that depend on the input shape (default: none)."""

    def build(self, input_shape: Any) -> None:
        self.create(input_shape)
        if _is_shape(input_shape):
            symbolic: Any = keras.KerasTensor(tuple(input_shape), dtype=self.compute_dtype)
        else:
            symbolic = [keras.KerasTensor(tuple(s), dtype=self.compute_dtype) for s in input_shape]
        self.call(symbolic)
        self.built = True


def _is_shape(s: Any) -> bool:
    return isinstance(s, list | tuple) and all(d is None or isinstance(d, int) for d in s)


def apply(layers: Sequence[keras.layers.Layer], x: Any, training: bool | None = None) -> Any:
    """Apply ``layers`` in order, passing ``training`` to those that take it."""
    for layer in layers:
        if isinstance(layer, keras.layers.Dropout | keras.layers.BatchNormalization | Block):
            x = layer(x, training=training)
        else:
            x = layer(x)
    return x
