"""Graph spec -> Keras model: the one way crmlab builds a model (train, ablate and search all come here)."""

from __future__ import annotations

from typing import Any

import keras

from crmlab.registry import GraphSpec, Registry, SpecError, core, resolve_graph, split_ref, topological_order

__all__ = ["assemble", "parameter_counts", "reverse_complement_average"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith(("Exception encountered", "Arguments received")):
            return line.strip()
    return text.splitlines()[0]


def assemble(spec: GraphSpec, blocks: Registry | None = None, templates: Registry | None = None) -> keras.Model:
    """Validate ``spec`` (expanding its template) and build the Keras functional model it describes.

    Each node becomes one layer named after the node, so ``model.get_layer("enc2")`` is node ``enc2``.

    Raises:
        SpecErrors: the spec is invalid (see :func:`crmlab.registry.validate.resolve_graph`).
        SpecError: a block rejects its parameters or its input shapes; the message names the node.
    """
    reg = blocks if blocks is not None else core.blocks()
    graph = resolve_graph(spec, reg, templates)
    file = graph.source
    tensors: dict[str, Any] = {}
    for name, inp in graph.inputs.items():
        tensors[name] = keras.Input(shape=tuple(inp.shape), dtype=inp.dtype, name=name)
    for name in topological_order(graph):
        node = graph.nodes[name]
        info = reg.get(node.block)
        try:
            layer = info.factory(**node.params, name=name)
        except (ValueError, TypeError) as exc:
            key, _, msg = _first_line(exc).partition(": ")
            if key in info.params:
                raise SpecError(file, f"nodes.{name}.params.{key}", f"{node.block}: {msg}") from None
            raise SpecError(file, f"nodes.{name}.params", f"{node.block}: {_first_line(exc)}") from None
        args = [tensors[_key(graph, r)] for r in node.inputs]
        try:
            out = layer(args[0] if len(args) == 1 else args)
        except Exception as exc:
            shapes = ", ".join(f"{r} {tuple(t.shape)}" for r, t in zip(node.inputs, args, strict=True))
            raise SpecError(
                file, f"nodes.{name}", f"{node.block} cannot take inputs {shapes}: {_first_line(exc)}"
            ) from None
        outs = out if isinstance(out, tuple | list) else (out,)
        for port, tensor in zip(info.outputs, outs, strict=True):
            tensors[f"{name}.{port}"] = tensor
        tensors[name] = outs[0]
    inputs = [tensors[n] for n in graph.inputs]
    outputs = [tensors[_key(graph, r)] for r in graph.outputs]
    return keras.Model(
        inputs=inputs[0] if len(inputs) == 1 else inputs,
        outputs=outputs[0] if len(outputs) == 1 else outputs,
        name=graph.name,
    )


def reverse_complement_average(model: keras.Model) -> keras.Model:
    """``model`` made strand-symmetric: it predicts the mean of its outputs for a sequence and for its reverse
    complement.

    The tokens go once through the model's ``onehot_input`` block; everything after it runs twice with shared
    weights, on the one-hot sequence and on its :class:`~crmlab.blocks.sequence.ReverseComplement`. Input shape: the
    model's ``(batch, length)`` tokens. Output shape: its ``(batch, 1)``.

    Raises:
        ValueError: the model has no single ``onehot_input`` block through which all its tokens pass.
    """
    from crmlab.blocks.sequence import OneHotInput, ReverseComplement

    found = [layer for layer in model.layers if isinstance(layer, OneHotInput)]
    if len(found) != 1:
        raise ValueError(f"reverse-complement averaging needs exactly one onehot_input block; found {len(found)}")
    onehot = found[0].output
    try:
        core = keras.Model(onehot, model.outputs[0], name=f"{model.name}_strand")
    except ValueError as exc:
        raise ValueError(
            f"reverse-complement averaging: tokens reach the model other than by onehot_input ({exc})"
        ) from None
    flipped = ReverseComplement(name="reverse_complement")(onehot)
    mean = keras.layers.Average(name="strand_average")([core(onehot), core(flipped)])
    return keras.Model(model.inputs, mean, name=model.name)


def _key(graph: GraphSpec, ref: str) -> str:
    node, port = split_ref(ref)
    return node if port is None or node in graph.inputs else f"{node}.{port}"


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """``{"total", "trainable", "non_trainable"}`` parameter counts of a built model."""
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    non_trainable = sum(int(keras.ops.size(w)) for w in model.non_trainable_weights)
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}
