"""``--register NAME`` of ``crmlab train``, ``crmlab ablate`` and ``crmlab search``: which finished run's logged model
becomes a new version of the registered model NAME (:func:`crmlab.runners.inference._mlflow_model.register_model`).

``train`` registers its run's model; ``search`` the best trial's (the run the parent run's ``crmlab.best_trial``
names), or the one ``--pick`` / ``--trial`` chooses (tagged with its objective values and ``crmlab.pareto``);
``ablate`` canonical's run of the study's first seed, or ``--register-variant`` / ``--register-seed``. The version's
tags are the study, its kind, the run key, the variant and seed or the trial, and the run's test metrics
(``test.SET.METRIC``). Options are checked before anything trains; every refusal is one line (exit code 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crmlab.registry import CrmlabError, did_you_mean

__all__ = ["check_ablation_options", "check_options", "register_ablation", "register_result", "register_search"]


def check_options(args: argparse.Namespace) -> None:
    """Refuse ``--register`` without MLflow, and ``--register-variant`` / ``--register-seed`` without ``--register``.

    Raises:
        CrmlabError: one line naming the flag.
    """
    for flag in ("register_variant", "register_seed"):
        if getattr(args, flag, None) is not None and not args.register:
            raise CrmlabError(f"--{flag.replace('_', '-')}: only with --register NAME")
    if args.register is not None and args.no_mlflow:
        raise CrmlabError("--register: the model registry is MLflow's; drop --no-mlflow")
    if args.register is not None and not args.register.strip():
        raise CrmlabError("--register: the registered model needs a name")


def check_ablation_options(args: argparse.Namespace, ablation: Any) -> tuple[str, int] | None:
    """The (variant, seed) whose model ``crmlab ablate --register`` registers, checked against the loaded study
    before training (after :func:`check_options`); ``None`` without ``--register``.

    Raises:
        CrmlabError: an unknown variant, or a seed the study does not train (one line).
    """
    from crmlab.search.ablation import REFERENCE, all_seeds

    if args.register is None:
        return None
    names = [v.name for v in ablation.variants]
    name = args.register_variant or REFERENCE
    if name not in names:
        raise CrmlabError(f"--register-variant: no variant '{name}' in {ablation.path}{did_you_mean(name, names)}")
    seeds = all_seeds(ablation.doc.seeds)
    seed = seeds[0] if args.register_seed is None else args.register_seed
    if seed not in seeds:
        raise CrmlabError(f"--register-seed: {seed} is not a seed of {ablation.path} ({', '.join(map(str, seeds))})")
    return name, seed


def register_result(
    args: argparse.Namespace, result: Any, study: str, kind: str, extra: Mapping[str, str] | None = None
) -> None:
    """Register the logged model of the finished run ``result`` (a :class:`~crmlab.runners.rundir._results.RunResult`)
    as a new version of ``args.register`` (nothing without it) and print the version.

    Args:
        args: the command's arguments (``register``, ``tracking_uri``).
        result: the finished run.
        study: the study's name (tag ``crmlab.study``).
        kind: ``train``, ``ablation`` or ``search`` (tag ``crmlab.kind``).
        extra: more tags (variant and seed, trial).

    Raises:
        CrmlabError: the run has no MLflow run, no logged model, or the registry refuses (one line).
    """
    from crmlab.runners.inference import register_model
    from crmlab.runners.tracking import default_tracking_uri

    if args.register is None:
        return
    if result.mlflow_run_id is None:
        raise CrmlabError(f"--register: run {result.run_key} has no MLflow run (trained with --no-mlflow?)")
    tags = {"crmlab.study": study, "crmlab.kind": kind, "crmlab.run_key": result.run_key, **(extra or {})}
    tags.update({f"test.{t}.{k}": f"{v:.6g}" for t, m in result.test_metrics.items() for k, v in m.items()})
    uri = args.tracking_uri or default_tracking_uri()
    version = register_model(uri, result.mlflow_run_id, args.register, tags)
    print(f"registered model {version.name} version {version.version} (MLflow run {result.mlflow_run_id})")


def register_ablation(args: argparse.Namespace, ablation: Any, choice: tuple[str, int] | None, results: Any) -> None:
    """Register the chosen run (:func:`check_ablation_options`) of a trained ablation; nothing without a choice.

    Raises:
        CrmlabError: that run did not finish (it failed, or adaptive seeds never reached its seed).
    """
    if choice is None:
        return
    name, seed = choice
    result = results.get(choice)
    if result is None:
        raise CrmlabError(f"--register: {name} seed={seed} has no finished run in this study; nothing registered")
    register_result(args, result, ablation.doc.name, "ablation", {"crmlab.variant": name, "crmlab.seed": str(seed)})


def register_search(args: argparse.Namespace, search: Any, rows: Any, runs_dir: Path, chosen: Any = None) -> None:
    """Register the model of the ``chosen`` trial (:func:`crmlab.search.arch.choose_trial`; default: the best
    complete trial) of a finished search; nothing without ``--register``. The version is tagged with the trial's
    objective values (``objective.METRIC``) and whether it is on the Pareto front (``crmlab.pareto``).

    Raises:
        CrmlabError: no complete trial, or its run folder is gone (one line).
    """
    from crmlab.runners.rundir import data_hashes, load_result, run_key
    from crmlab.search.arch import best_row

    if args.register is None:
        return
    best = chosen if chosen is not None else best_row(rows, search.direction)
    if best is None:
        raise CrmlabError(f"--register: {search.doc.name} has no complete trial; nothing registered")
    spec = search.variant(best.params)  # the trial's run, keyed as the trial keyed it (crmlab.search.arch._trial)
    key = run_key(spec.graph, spec.recipe, data_hashes(search.datasets, search.tests))
    if not (runs_dir / key / "result.json").is_file():
        raise CrmlabError(f"--register: the run of trial {best.number} is not in {runs_dir}; nothing registered")
    extra = {"crmlab.trial": str(best.number), "crmlab.pareto": str(best.pareto).lower()}
    extra.update({f"objective.{k}": f"{v:.6g}" for k, v in best.values.items()})
    register_result(args, load_result(runs_dir / key, key), search.doc.name, "search", extra)
