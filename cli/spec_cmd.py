"""``crmlab blocks`` and ``crmlab build``: what the block registry holds and what a graph spec assembles to."""

from __future__ import annotations

import argparse
from typing import Any

from crmlab import options

__all__ = ["add_parsers", "cmd_blocks", "cmd_build"]


def cmd_blocks(args: argparse.Namespace) -> int:
    """List registered blocks (and templates) with origin, ports and parameters; then plugins that failed."""
    from crmlab.registry import core, type_name

    for reg in (core.blocks(), core.templates()):
        infos = reg.load_all()
        print(f"{reg.kind}s ({len(infos)}):")
        for info in infos:
            ports = f"({', '.join(info.inputs)}) -> ({', '.join(info.outputs)})" if reg.kind == "block" else ""
            print(f"  {info.name}  {ports}")
            print(f"      origin: {info.origin}")
            if info.summary:
                print(f"      {info.summary}")
            for p in info.params.values():
                default = "" if p.required else f" = {p.default!r}"
                print(f"      {p.name}: {type_name(p.annotation)}{default}")
        if reg.failed:
            print(f"failed {reg.kind} plugins ({len(reg.failed)}):")
            for f in reg.failed.values():
                print(f"  {f.name}  from {f.origin}: {f.error}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Validate and assemble a graph spec; print a per-node summary and the parameter count."""
    from crmlab.registry import load_graph, resolve_graph, yamlio

    spec = load_graph(args.spec)
    resolved = resolve_graph(spec)
    if args.resolved:
        print(yamlio.dumps(resolved.to_dict()), end="")
        return 0

    import keras

    from crmlab.blocks.assemble import assemble, parameter_counts

    model = assemble(resolved)
    if args.keras_summary:
        model.summary()
    else:
        _print_nodes(model, resolved)
    counts = parameter_counts(model)
    print(
        f"{resolved.name}: {counts['total']:,} total parameters "
        f"({counts['trainable']:,} trainable, {counts['non_trainable']:,} non-trainable) "
        f"on {keras.config.backend()}"
    )
    return 0


def _print_nodes(model: Any, spec: Any) -> None:
    rows = [("node", "block", "output shape", "params")]
    for name, node in spec.nodes.items():
        layer = model.get_layer(name)
        outs = layer.output if isinstance(layer.output, list | tuple) else [layer.output]
        shape = " ".join(str(tuple(o.shape)) for o in outs)
        rows.append((name, node.block, shape, f"{layer.count_params():,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def add_parsers(sub: Any) -> None:
    """Add the ``blocks`` and ``build`` sub-commands to the ``crmlab`` parser."""
    p = sub.add_parser("blocks", help="list registered blocks, templates and failed plugins")
    p.set_defaults(func=cmd_blocks)

    p = sub.add_parser(
        "build",
        help="validate and assemble a graph spec, print its summary and parameter count",
        parents=[options.keras_backend("Keras backend (default: KERAS_BACKEND or tensorflow)")],
    )
    p.add_argument("spec", help="graph spec YAML (e.g. studies/graphs/crmnet.yaml)")
    p.add_argument(
        "--keras-summary", action="store_true", help="print Keras' model.summary() instead of the node table"
    )
    p.add_argument("--resolved", action="store_true", help="print the validated spec with its template expanded")
    p.set_defaults(func=cmd_build)
