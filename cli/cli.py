"""The ``crmlab`` command.

Every user mistake (bad YAML, unknown block, wrong parameter, impossible shape) is printed as one line
``FILE: key.path: message`` on stderr and exits with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from crmlab import model_registry, options
from crmlab.registry.errors import CrmlabError
from crmlab.runners.quiet import import_keras_quietly

__all__ = [
    "build_parser",
    "cmd_ablate",
    "cmd_blocks",
    "cmd_build",
    "cmd_compare",
    "cmd_search",
    "cmd_train",
    "main",
]


def _use_backend(backend: str | None) -> None:
    """Select the Keras backend; must run before Keras is first imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if backend:
        loaded = sys.modules.get("keras")
        if loaded is not None and loaded.config.backend() != backend:
            raise CrmlabError(f"--backend: Keras is already running on {loaded.config.backend()}")
        os.environ["KERAS_BACKEND"] = backend
    import_keras_quietly()


def _place(args: argparse.Namespace) -> AbstractContextManager[None]:
    """Plan where ``--jobs`` / ``--workers`` processes run (:mod:`crmlab.runners.placement`) into ``args.slots``;
    must run before Keras is imported. With several workers this process keeps off every accelerator while the
    command runs (it only loads the study and collects results); a single worker is this process, restricted to its
    slot's GPUs."""
    if not hasattr(args, "gpus_per_run"):
        return nullcontext()
    from crmlab.runners.placement import accelerators_hidden, detect_gpus, placement_text, plan_slots

    gpus = detect_gpus()
    jobs = args.jobs if hasattr(args, "jobs") else args.workers
    args.slots = plan_slots(gpus, jobs, args.gpus_per_run, args.runs_per_gpu)
    if len(args.slots) > 1:
        print(placement_text(args.slots, gpus), flush=True)
        return accelerators_hidden()
    if args.slots[0].gpus and (args.gpus_per_run or args.runs_per_gpu):
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(args.slots[0].gpus)
    return nullcontext()


def _progress(line: str) -> None:
    print(line, flush=True)


def cmd_blocks(args: argparse.Namespace) -> int:
    """List registered blocks (and templates) with origin, ports and parameters; then plugins that failed."""
    from crmlab.registry import core
    from crmlab.registry.validate import type_name

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
    from crmlab.registry import yamlio
    from crmlab.registry.spec import load_graph
    from crmlab.registry.validate import resolve_graph

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


def cmd_train(args: argparse.Namespace) -> int:
    """Train a study: stages, test metrics, MLflow run."""
    from crmlab.runners.manifest import Owner, record_study
    from crmlab.runners.processes import is_chief, join_processes
    from crmlab.runners.recipe import TrainStudy
    from crmlab.runners.study import checked_runs_dir, load_train_study, read_study
    from crmlab.runners.tracking import Tracker
    from crmlab.runners.train import train_run

    runs_dir = checked_runs_dir(args.runs_dir)
    model_registry.check_options(args)
    join_processes(read_study(Path(args.study), args.set, TrainStudy).recipe.strategy)  # before JAX uses a device
    loaded = load_train_study(args.study, args.set, assemble=True)
    chief = is_chief()  # the other processes of a multi_worker run write nothing
    tracker = None if args.no_mlflow or not chief else Tracker(args.tracking_uri, loaded.study.name)
    owner = Owner(loaded.study.name, "train")
    if chief:
        record_study(runs_dir, owner, "start")
    result = train_run(
        loaded.graph,
        loaded.study.recipe,
        loaded.datasets,
        loaded.tests,
        runs_dir,
        tracker=tracker,
        run_name=loaded.study.name,
        verbose=args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2),
        owner=owner,
    )
    if chief:
        record_study(runs_dir, owner, "finish")
    print(f"run {result.run_key} ({result.run_dir}); MLflow run {result.mlflow_run_id or '-'}")
    if result.validation:
        v = result.validation
        stage = loaded.study.recipe.stages[-1].name
        print(f"validation ({stage}, exported model): pearson_r {v['val_pearson_r']:.4f}, r2 {v['val_r2']:.4f}")
    print(f"{'test set':<34} {'n':>6} {'pearson_r':>10} {'spearman':>10} {'r2':>8} {'mse':>8}")
    for name, m in result.test_metrics.items():
        n = len(result.predictions.get(name, []))
        print(f"{name:<34} {n:>6} {m['pearson_r']:>10.4f} {m['spearman_rho']:>10.4f} {m['r2']:>8.4f} {m['mse']:>8.4f}")
    if tracker is not None:
        model_registry.register_result(args, result, loaded.study.name, "train")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    """Run an ablation study (variants x seeds), then print and write the comparison."""
    from crmlab.runners.study import checked_runs_dir
    from crmlab.search.ablation import load_ablation
    from crmlab.search.ablation_train import run_ablation
    from crmlab.search.report import table_text
    from crmlab.search.seeds import seeds_text

    runs_dir = checked_runs_dir(args.runs_dir)
    model_registry.check_options(args)
    ablation = load_ablation(args.study, args.set)
    choice = model_registry.check_ablation_options(args, ablation)
    names = ", ".join(f"{v.name} ({v.parameters:,} params)" for v in ablation.variants)
    print(f"{ablation.doc.name}: {len(ablation.variants)} variants x {seeds_text(ablation.doc.seeds)}: {names}")
    results, rows, report = run_ablation(
        ablation, runs_dir, args.tracking_uri, mlflow=not args.no_mlflow, slots=args.slots, progress=_progress
    )
    print(table_text(rows))
    print(f"report: {report}")
    for (name, seed), reason in ablation.failed.items():
        print(f"{args.study}: {name} seed={seed} failed: {reason}", file=sys.stderr)
    model_registry.register_ablation(args, ablation, choice, results)
    return 1 if ablation.failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare the finished runs of an ablation study against canonical (trains nothing)."""
    from crmlab.runners.study import checked_runs_dir
    from crmlab.search.ablation import collect, load_ablation
    from crmlab.search.report import compare, table_text, write_all

    runs_dir = checked_runs_dir(args.runs_dir)
    ablation = load_ablation(args.study, args.set, assemble=False)
    results, missing = collect(ablation, runs_dir)
    if missing:
        raise CrmlabError(f"{args.study}: {len(missing)} run(s) not finished: {', '.join(missing)}; run crmlab ablate")
    rows = compare(ablation, results)
    print(table_text(rows))
    print(f"report: {write_all(ablation, rows, results, runs_dir)[0]}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Run a search study (kind: search): canonical once, then trials; leaderboard, importances, export."""
    from crmlab.runners.study import checked_runs_dir
    from crmlab.search.backend import SearchOptions
    from crmlab.search.backends import BACKENDS
    from crmlab.search.export import check_export_path, export_best_trial
    from crmlab.search.search import load_search

    runs_dir = checked_runs_dir(args.runs_dir)
    export = check_export_path(args.export)
    model_registry.check_options(args)
    search = load_search(args.study, args.set)
    doc = search.doc
    options = SearchOptions(
        tracking_uri=args.tracking_uri,
        mlflow=not args.no_mlflow,
        storage=args.storage,
        workers=len(args.slots),
        slots=args.slots,
        progress=_silent if args.quiet else _progress,
    )
    backend = BACKENDS[doc.backend]()
    backend.check_options(options)
    print(
        f"{doc.name}: {doc.backend} search, {len(search.space)} parameters, {doc.trials} trials, "
        f"objective {doc.objective.metric} ({doc.objective.direction}); canonical {search.canonical_parameters:,} "
        "parameters",
        flush=True,
    )
    backend.connect(search, runs_dir, options)
    if options.mlflow:
        from crmlab.runners.tracking import Tracker

        Tracker(args.tracking_uri, doc.name)  # an unusable tracking store is reported before an SQLite storage
    run = backend.run(search, runs_dir, options)
    print(backend.summary(search, run))
    model_registry.register_search(args, search, run.rows, runs_dir)
    if export is not None:
        best, study_file, graph_file = export_best_trial(search, run.rows, export)
        print(f"best trial {best.number} exported: {study_file} (graph {graph_file}); train it: crmlab train {export}")
    return 0


def _silent(line: str) -> None:
    del line


def build_parser() -> argparse.ArgumentParser:
    """The ``crmlab`` argument parser: one sub-command per job, shared flags from :mod:`crmlab.options`."""
    parser = options.Parser(prog="crmlab", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    study = [options.overrides(), options.keras_backend(), options.tracking_uri()]
    p = sub.add_parser(
        "train",
        help="train a study (kind: train) and evaluate it on its test sets",
        parents=[*study, options.no_mlflow(), options.runs_dir(), options.register("the run's model")],
    )
    p.add_argument("study", help="train study YAML (e.g. studies/train_small.yaml)")
    p.add_argument(
        "--verbose",
        type=int,
        choices=[0, 1, 2],
        help="Keras progress: 0 none, 1 bar, 2 a line per epoch (default: 1 on a terminal, else 2)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "ablate",
        help="run an ablation study (kind: ablation) and compare it against canonical",
        parents=[
            *study,
            options.runs_dir(),
            options.no_mlflow(),
            options.placement("--jobs"),
            options.register("a run's model (canonical's, the first seed's, unless named below)", variant=True),
        ],
    )
    p.add_argument("study", help="ablation study YAML (e.g. studies/quickstart.yaml)")
    p.add_argument(
        "--jobs",
        type=options.positive_int,
        help="train runs in N worker processes (default: one per GPU group times --runs-per-gpu; 1 without GPUs)",
    )
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser(
        "compare",
        help="compare an ablation study's finished runs against canonical (trains nothing)",
        parents=[*study, options.runs_dir()],
    )
    p.add_argument("study", help="ablation study YAML (e.g. studies/quickstart.yaml)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "search",
        help="search a space of variants (kind: search) with Optuna or KerasTuner",
        parents=[
            *study,
            options.no_mlflow(),
            options.runs_dir(),
            options.placement("--workers"),
            options.register("the best trial's model"),
        ],
    )
    p.add_argument("study", help="search study YAML (e.g. studies/quick_search.yaml)")
    p.add_argument("--storage", help="Optuna storage URL, shared by workers (default: sqlite:///<runs-dir>/optuna.db)")
    p.add_argument(
        "--workers",
        type=options.positive_int,
        help="run trials in N local worker processes (default: one per GPU group times --runs-per-gpu; 1 without GPUs)",
    )
    p.add_argument("--export", metavar="BEST.yaml", help="write the best trial as a train study (+ BEST.graph.yaml)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-trial progress lines")
    p.set_defaults(func=cmd_search)

    from crmlab import dashboard, runs, step_time
    from crmlab.interpret import add_parsers

    add_parsers(sub)  # predict, explain
    step_time.add_parser(sub)
    runs.add_parser(sub)
    dashboard.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from crmlab import __version__

        print(f"crmlab {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return options.EXIT_USAGE
    try:
        with _place(args):
            _use_backend(getattr(args, "backend", None))
            return args.func(args)
    except CrmlabError as exc:
        for line in str(exc).splitlines():
            print(line, file=sys.stderr)
        return options.EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
