"""``crmlab predict`` and ``crmlab explain``: using trained models (the argument handling on top of the libraries).

``predict`` scores a sequence file with a model (:mod:`crmlab.runners.inference._predict`); ``explain`` measures
gradient x input saliency at known JASPAR motifs for one model (:mod:`crmlab.runners.inference._explain`) or for every
variant of an ablation study (:mod:`crmlab.search.ablation._explain`), writes tables and figures to a folder and logs
them to the MLflow run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from crmlab import options
from crmlab.registry import CrmlabError, did_you_mean

__all__ = ["add_parsers", "cmd_explain", "cmd_predict"]


def _where(assignments: list[str]) -> dict[str, Any]:
    """``--where COLUMN=VALUE`` flags -> a ``where`` mapping (values read as YAML: ``1`` is a number)."""
    from crmlab.registry import parse_assignment

    where = {}
    for text in assignments:
        if "=" not in text:
            raise CrmlabError(f"--where: expected COLUMN=VALUE, got {text!r}")
        key, value = parse_assignment(text)
        where[key] = value
    return where


def _source(path: str, args: argparse.Namespace, flag: str) -> Any:
    from pydantic import ValidationError

    from crmlab.runners.data import DataSource

    if not Path(path).is_file():
        raise CrmlabError(f"{flag}: {path}: no such file")
    try:
        return DataSource(
            path=path,
            format=args.format,
            sequence_column=args.sequence_column,
            value_column=args.value_column,
            where=_where(args.where),
            unknown=args.unknown,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise CrmlabError(f"--where: {'.'.join(str(p) for p in error['loc'])}: {error['msg']}") from None


def cmd_predict(args: argparse.Namespace) -> int:
    """Score a sequence file with a trained model; ``--ism`` adds every single-nucleotide substitution's effect."""
    from crmlab.runners.data import read_sequences
    from crmlab.runners.inference import (
        load_model,
        mutagenesis_path,
        predict,
        saturation_mutagenesis,
        write_mutagenesis,
        write_predictions,
    )
    from crmlab.runners.training import regression_metrics

    loaded = load_model(args.model, args.tracking_uri)
    table = read_sequences(_source(args.sequences, args, "SEQUENCES"), loaded.length, id_column=args.id_column)
    out = Path(args.out)
    progress = not args.quiet
    if args.ism:
        predictions, effects = saturation_mutagenesis(
            loaded.model, table.tokens, table.lengths, args.batch_size, progress
        )
    else:
        predictions = predict(loaded.model, table.tokens, args.batch_size, progress)
    write_predictions(out, table, predictions)
    print(f"{len(table)} sequences scored with {args.model}: {out}")
    if args.ism:
        ism = mutagenesis_path(out)
        write_mutagenesis(ism, table.ids, table.tokens, table.lengths, effects)
        print(f"saturation mutagenesis ({int(table.lengths.sum()):,} positions x 4 bases): {ism}")
    if table.values is not None and len(table) > 1:
        m = regression_metrics(table.values, predictions)
        print(f"against the measured values: pearson_r {m['pearson_r']:.4f}  spearman {m['spearman_rho']:.4f}")
    return 0


def _study_test(study: Path, name: str | None, length: int, sources: dict[str, Any] | None = None) -> tuple[str, Any]:
    """Test set ``name`` (default: the first) of a train or ablation study file, read for scoring."""
    from crmlab.runners.data import DataSource, read_sequences

    if sources is None and _kind(study) == "train":
        from crmlab.runners.studyfile import load_train_study

        sources = load_train_study(study).study.test_sets
    elif sources is None:
        from crmlab.search.ablation import load_ablation

        sources = load_ablation(study, assemble=False).doc.test_sets
    name = name or next(iter(sources))
    if name not in sources:
        raise CrmlabError(f"{study}: --test: no test set '{name}'{did_you_mean(name, list(sources))}")
    source: DataSource = sources[name]
    return name, read_sequences(source, length, study.parent, key=f"test_sets.{name}")


def _kind(study: Path) -> str:
    from crmlab.registry import yamlio

    doc = yamlio.load(study)
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind not in ("train", "ablation"):
        raise CrmlabError(f"{study}: kind: explain takes a train or an ablation study, not {kind!r}")
    return kind


def _motifs(args: argparse.Namespace) -> list[Any]:
    from crmlab.runners.inference import jaspar_motifs

    names = [n.strip() for n in args.motifs.split(",") if n.strip()] if args.motifs else []
    return jaspar_motifs(args.jaspar_release, tax_group=args.tax_group, names=names)


def _settings(args: argparse.Namespace, target: str, test: str) -> dict[str, Any]:
    return {
        "model": target,
        "test_set": test,
        "p_value": args.p_value,
        "jaspar_release": args.jaspar_release,
        "tax_group": args.tax_group,
        "collection": "CORE",
    }


def _log(run_id: str | None, args: argparse.Namespace, folder: Path, artifact_path: str) -> None:
    """Log the outputs to MLflow; a store without the run only warns (the files are written either way)."""
    from crmlab.runners.inference import log_folder

    if run_id is None or args.no_mlflow:
        return
    try:
        log_folder(run_id, args.tracking_uri, folder, artifact_path)
        print(f"logged to MLflow run {run_id} under {artifact_path}/")
    except CrmlabError as exc:
        print(f"not logged to MLflow: {exc}", file=sys.stderr)


def _print_table(table: Any, min_hits: int, rows: int = 15) -> None:
    shown = table[table["hits"] >= min_hits].head(rows)
    has_values = "expression_with" in table.columns
    head = f"{'motif':<20} {'hits':>5} {'sal@hits':>10} {'sal(all)':>10} {'|sal| ratio':>11}"
    print(head + (f" {'expr with':>10} {'without':>8}" if has_values else ""))
    for r in shown.itertuples():
        line = f"{r.motif + ' ' + r.name:<20} {r.hits:>5} {r.saliency_at_hits:>10.3g} {r.saliency_all:>10.3g}"
        line += f" {r.abs_saliency_ratio:>11.3f}"
        if has_values:
            line += f" {r.expression_with:>10.3f} {r.expression_without:>8.3f}"
        print(line)


def _explain_study(args: argparse.Namespace, study: Path) -> int:
    from crmlab.runners.rundir import default_runs_dir
    from crmlab.search.ablation import explain_study, load_ablation

    ablation = load_ablation(study, args.set, assemble=False)
    runs_dir = Path(args.runs_dir) if args.runs_dir else default_runs_dir()
    motifs = _motifs(args)
    result, out, _ = explain_study(
        ablation,
        runs_dir,
        motifs,
        Path(args.out) if args.out else None,
        args.test,
        args.seed,
        args.p_value,
        args.logos,
        args.min_hits,
        _settings(args, str(study), args.test or ""),
        progress=not args.quiet,
    )
    variants = list(result.explanations)
    frequent = result.comparison[result.comparison["hits"] >= args.min_hits].head(15)
    print(f"{ablation.doc.name}: {result.test_set}, seed {result.seed}: |saliency| ratio at motif hits per variant")
    print(f"{'motif':<20} {'hits':>5} " + " ".join(f"{v[:16]:>16}" for v in variants))
    for r in frequent.to_dict("records"):
        ratios = " ".join(f"{r[f'{v}.abs_saliency_ratio']:>16.3f}" for v in variants)
        print(f"{r['motif'] + ' ' + r['name']:<20} {r['hits']:>5} {ratios}")
    print(f"outputs: {out}")
    _log(result.parent_run_id, args, out, f"explain/{result.test_set}-seed{result.seed}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Saliency at known motifs for a model, a run, a train study's run or every variant of an ablation study."""
    from crmlab.runners.inference import explain, load_model, write_explanation

    target = Path(args.target)
    if target.suffix in (".yaml", ".yml") and target.is_file() and _kind(target) == "ablation":
        return _explain_study(args, target)
    study = Path(args.study) if args.study else None
    sources = None
    if target.suffix in (".yaml", ".yml") and target.is_file():
        from crmlab.runners.rundir import default_runs_dir, finished_result
        from crmlab.runners.studyfile import load_train_study

        study = target
        loaded_study = load_train_study(target, args.set)
        runs_dir = Path(args.runs_dir) if args.runs_dir else default_runs_dir()
        s = loaded_study.study
        found = finished_result(loaded_study.graph, s.recipe, loaded_study.datasets, loaded_study.tests, runs_dir)
        if found is None:
            raise CrmlabError(f"{target}: its run is not finished in {runs_dir}; run crmlab train first")
        loaded = load_model(found.run_dir)
        run_dir, run_id, sources = found.run_dir, found.mlflow_run_id, s.test_sets
    else:
        loaded = load_model(args.target, args.tracking_uri)
        run_dir, run_id = loaded.run_dir, loaded.run_id
    test = args.test
    if study is not None and (test is None or not Path(test).is_file()):
        test, sequences = _study_test(study, test, loaded.length, sources)
    elif test is not None:
        from crmlab.runners.data import read_sequences

        sequences = read_sequences(_source(test, args, "--test"), loaded.length, key="--test")
        test = Path(test).name.split(".")[0]
    else:
        raise CrmlabError("--test: name a sequence file (or a test set, with --study STUDY.yaml)")
    motifs = _motifs(args)
    expl = explain(loaded.model, sequences, motifs, args.p_value, batch_size=args.batch_size, progress=not args.quiet)
    if args.out:
        out = Path(args.out)
    elif run_dir is not None:
        out = run_dir / f"explain-{test}"
    else:
        out = Path(f"explain-{Path(str(args.target)).stem[:24]}-{test}")
    write_explanation(expl, motifs, out, f"{args.target} on {test}", _settings(args, str(args.target), test),
                      args.logos, args.min_hits)  # fmt: skip
    _print_table(expl.table, args.min_hits)
    frequent = expl.table[expl.table["hits"] >= args.min_hits]
    above = frequent[frequent["saliency_at_hits"] > frequent["saliency_all"]]
    print(f"saliency at hits above the all-position mean ({len(above)} of {len(frequent)} motifs with >= "
          f"{args.min_hits} hits): {', '.join(above['name']) or '-'}")  # fmt: skip
    print(f"outputs: {out}")
    _log(run_id, args, out, f"explain/{test}")
    return 0


def add_parsers(sub: Any) -> None:
    """Add the ``predict`` and ``explain`` sub-commands to the ``crmlab`` parser."""
    common = [options.keras_backend(), options.tracking_uri(), _quiet()]
    p = sub.add_parser(
        "predict", help="score sequences (TSV/CSV/FASTA) with a trained model; --ism: mutagenesis", parents=common
    )
    p.add_argument("model", help="a .keras file, a run directory or an MLflow run id")
    p.add_argument("sequences", metavar="SEQUENCES", help="TSV/CSV (a 'seq' column) or FASTA file, .gz allowed")
    p.add_argument("-o", "--out", required=True, help="predictions TSV to write (id, measured if given, predicted)")
    p.add_argument("--ism", action="store_true", help="also write OUT.ism.tsv: every substitution's effect")
    p.add_argument("--id-column", default="id", help="table column naming the rows (default: id, else row number)")
    _input_options(p)
    p.add_argument("--batch-size", type=int, default=1024, help="sequences per forward pass (default 1024)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "explain",
        help="gradient x input saliency at known JASPAR motifs (a model or a study)",
        parents=[
            *common,
            options.overrides(),
            options.runs_dir(),
            options.no_mlflow("do not log the outputs to MLflow"),
        ],
    )
    p.add_argument("target", help="a .keras file, run directory, MLflow run id, train study or ablation study YAML")
    p.add_argument("--test", help="test set name (of the study) or a sequence file (default for a study: its first)")
    p.add_argument("--study", help="train or ablation study whose test set --test names (for a model or run)")
    p.add_argument("--seed", type=int, help="ablation study: the seed whose runs to explain (default: the first)")
    p.add_argument("-o", "--out", help="output folder (default: beside the run, or the study's report folder)")
    p.add_argument("--p-value", type=float, default=1e-4, help="motif hit p-value threshold (default 1e-4)")
    p.add_argument("--jaspar-release", default="JASPAR2026", help="JASPAR release shipped by pyjaspar")
    p.add_argument("--tax-group", default="fungi", help="JASPAR CORE taxonomic group (default fungi)")
    p.add_argument("--motifs", help="comma-separated factor names or matrix ids to keep (default: all)")
    p.add_argument("--logos", type=int, default=6, help="motifs to draw saliency logos for (default 6)")
    p.add_argument("--min-hits", type=int, default=10, help="motifs with fewer hits are left out of figures")
    p.add_argument("--batch-size", type=int, default=256, help="sequences per gradient evaluation (default 256)")
    _input_options(p)
    p.set_defaults(func=cmd_explain)


def _input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="auto", choices=["auto", "tsv", "csv", "fasta"], help="input format")
    p.add_argument("--sequence-column", default="seq", help="table column of sequences (default seq)")
    p.add_argument("--value-column", default="expression", help="table column of measured values, if present")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE", help="keep only matching rows")
    p.add_argument("--unknown", default="error", choices=["error", "as_n"], help="other characters: error or N")


def _quiet() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parent
