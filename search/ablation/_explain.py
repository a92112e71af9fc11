"""``crmlab explain STUDY.yaml`` for an ablation study: every variant's saliency and motif table, side by side.

One seed's finished run of each variant is explained on one test set; motif hits depend on the sequences only,
so they are scanned once and shared. Each variant gets the single-model outputs in its own sub-folder
(:func:`crmlab.runners.inference._explain.write_explanation`); the comparison table puts the per-motif saliency columns
of every variant next to each other, and a grouped bar chart shows the |saliency| ratio at hits per variant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd

from crmlab.registry import CrmlabError, did_you_mean
from crmlab.runners.data import SequenceTable, read_sequences
from crmlab.runners.inference import Explanation, Motif, explain, scan, write_explanation
from crmlab.runners.studyfile import input_length
from crmlab.search.ablation._seeds import all_seeds
from crmlab.search.ablation._study import Ablation, collect, state_path

__all__ = ["PER_VARIANT", "SHARED", "StudyExplanation", "comparison_table", "explain_study", "study_test_set"]

SHARED = ["motif", "name", "width", "hits", "sequences", "expression_with", "expression_without", "expression_p"]
PER_VARIANT = ["saliency_at_hits", "saliency_all", "abs_saliency_at_hits", "abs_saliency_ratio"]


@dataclass
class StudyExplanation:
    """The explanations of every variant and their side-by-side table.

    Attributes:
        test_set: the explained test set.
        seed: the seed whose runs were explained.
        explanations: per variant (study order, canonical first).
        comparison: one row per motif: shared columns, then ``<variant>.<column>`` per variant.
        parent_run_id: the study's MLflow parent run, when it has one.
    """

    test_set: str
    seed: int
    explanations: dict[str, Explanation]
    comparison: pd.DataFrame
    parent_run_id: str | None


def study_test_set(ablation: Ablation, test: str | None) -> tuple[str, SequenceTable]:
    """The named test set of the study (default: its first) read with ids and real lengths."""
    names = list(ablation.doc.test_sets)
    name = test or names[0]
    if name not in ablation.doc.test_sets:
        raise CrmlabError(f"{ablation.path}: --test: no test set '{name}'{did_you_mean(name, names)}")
    length = input_length(ablation.variants[0].graph)
    table = read_sequences(ablation.doc.test_sets[name], length, ablation.path.parent, key=f"test_sets.{name}")
    return name, table


def comparison_table(explanations: dict[str, Explanation]) -> pd.DataFrame:
    """Shared motif columns (hits, expression) and each variant's saliency columns, most hits first."""
    first = next(iter(explanations.values())).table
    table = first[[c for c in SHARED if c in first.columns]].set_index("motif")
    for variant, expl in explanations.items():
        cols = expl.table.set_index("motif")[PER_VARIANT]
        table = table.join(cols.rename(columns={c: f"{variant}.{c}" for c in PER_VARIANT}))
    return table.reset_index()


def explain_study(
    ablation: Ablation,
    runs_dir: Path,
    motifs: Sequence[Motif],
    out: Path | None = None,
    test: str | None = None,
    seed: int | None = None,
    p_value: float = 1e-4,
    logos: int = 6,
    min_hits: int = 10,
    settings: dict | None = None,
    progress: bool = False,
) -> tuple[StudyExplanation, Path, list[Path]]:
    """Explain one seed's run of every variant on one test set and compare them (with adaptive seeds, of every
    variant that trained that seed).

    Args:
        ablation: the loaded study (:func:`crmlab.search.ablation._study.load_ablation`).
        runs_dir: where its runs are (every variant's run of ``seed`` must be finished).
        motifs: motifs to scan for.
        out: output folder (default ``RUNS_DIR/_studies/NAME-KEY/explain-TEST-seedN``).
        test: test set name (default: the study's first).
        seed: the seed (default: the study's first).
        p_value: motif hit threshold.
        logos: saliency logos per variant.
        min_hits: motifs with fewer hits are left out of the figures.
        settings: extra entries for each ``summary.json``.
        progress: show progress bars.

    Returns:
        The explanations, the output folder and the files written.

    Raises:
        CrmlabError: an unknown test set or seed, or runs not finished.
    """
    from crmlab.runners.inference import load_model, variant_bars

    seeds = all_seeds(ablation.doc.seeds)
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise CrmlabError(f"{ablation.path}: --seed: {seed} is not one of the study's seeds {seeds}")
    name, sequences = study_test_set(ablation, test)
    results, missing = collect(ablation, runs_dir)
    missing = [m for m in missing if m.endswith(f" seed={seed}")]
    if missing:
        raise CrmlabError(
            f"{ablation.path}: {len(missing)} run(s) not finished: {', '.join(missing)}; run crmlab ablate"
        )
    variants = [v for v in ablation.variants if (v.name, seed) in results]  # adaptive seeds: who got this seed
    if not variants:
        trained = sorted({s for _, s in results})
        raise CrmlabError(f"{ablation.path}: --seed: no run of seed {seed}; the study trained seeds {trained}")
    out = out or runs_dir / "_studies" / f"{ablation.doc.name}-{ablation.key}" / f"explain-{name}-seed{seed}"
    hits = scan(motifs, sequences.tokens, sequences.lengths, p_value)
    explanations: dict[str, Explanation] = {}
    files: list[Path] = []
    for v in variants:
        result = results[(v.name, seed)]
        loaded = load_model(result.run_dir)
        expl = explain(loaded.model, sequences, motifs, p_value, hits=hits, progress=progress)
        info = {**(settings or {}), "variant": v.name, "seed": seed, "test_set": name, "run_dir": str(result.run_dir)}
        files += write_explanation(
            expl, motifs, out / v.name, f"{v.name} (seed {seed}) on {name}", info, logos, min_hits
        )
        explanations[v.name] = expl
        keras.backend.clear_session()
    comparison = comparison_table(explanations)
    files.append(out / "comparison.tsv")
    comparison.to_csv(files[-1], sep="\t", index=False, float_format="%.6g")
    title = f"{ablation.doc.name}: |saliency| at motif hits, {name}, seed {seed}"
    files += variant_bars(comparison, list(explanations), out / "comparison.png", title, min_hits)
    state = state_path(runs_dir, ablation)
    parent = json.loads(state.read_text()).get("parent_run_id") if state.exists() else None
    return StudyExplanation(name, seed, explanations, comparison, parent), out, files
