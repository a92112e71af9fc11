"""Pruning benchmark: the same search (same space, seed and number of trials) with the study's Optuna pruner and
with none; prints the best validation value and the epochs trained by each, and their ratio.

Each mode gets its own runs folder and storage (``WORK/<pruner>``), so no trial reuses another mode's runs;
canonical CRMnet (the unpatched base spec, trained once by every search) is trained once and copied into both, and
is not counted. A mode already finished in ``--work-dir`` is read back, not rerun (its time is kept in
``bench.json``), so comparing another pruner against the same search without pruning costs one search.
Epochs are counted from the run folders (every epoch trained, pretraining included; epochs of a stage reused from
the stage cache are not trained and not counted). Writes ``bench/results/pruning.csv`` (and ``.md``).

Usage::

    python bench/pruning.py                                    # studies/quick_search.yaml as written
    python bench/pruning.py --set trials=16 --set recipe.stages.1.epochs=10
    python bench/pruning.py --work-dir W --set optuna.pruner=median   # another pruner, same W: reuses "none"
    python bench/pruning.py --quick                            # CI size: the tiny test search
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = ["mode", "pruner", "trials", "complete", "pruned", "failed", "best", "epochs", "finetune_epochs", "seconds"]


def epochs_trained(runs: Path, skip: set[str], final: str) -> tuple[int, int]:
    """(all epochs, epochs of the ``final`` stage) trained in the run folders under ``runs`` except the ``skip`` run
    keys, the epochs of dropped (pruned) attempts included."""
    total = last = 0
    for state in runs.glob("*/state.json"):
        if state.parent.name in skip:
            continue
        record = json.loads(state.read_text())
        history = record.get("dropped_history", []) + record["history"]  # a pruned trial's epochs are dropped_history
        trained = [h for h in history if "reused" not in h]
        total += len(trained)
        last += sum(h["stage"] == final for h in trained)
    return total, last


def run_mode(study: Path, overrides: list[str], pruner: str | None, work: Path, canonical: Path | None) -> dict:
    """Run (or read back) the search with ``pruner`` (``None``: the study's) in ``work/<pruner>``."""
    from crmlab.search.arch import CANONICAL_ATTR, load_search, run_optuna

    sets = [*overrides, *([f"optuna.pruner={pruner}"] if pruner else [])]
    search = load_search(study, sets, assemble=False)
    runs = work / search.doc.optuna.pruner
    runs.mkdir(parents=True, exist_ok=True)
    if canonical is not None and not (runs / canonical.name).exists():
        shutil.copytree(canonical, runs / canonical.name)
    done = runs / "bench.json"
    started = time.perf_counter()
    opt, rows, record = run_optuna(
        search, runs, None, None, mlflow=False, progress=lambda line: print(line, flush=True)
    )
    seconds = json.loads(done.read_text())["seconds"] if done.exists() else time.perf_counter() - started
    done.write_text(json.dumps({"seconds": seconds}))
    total, last = epochs_trained(runs, {record["run_key"]}, search.doc.recipe["stages"][-1]["name"])
    complete = [r for r in rows if r.state == "complete" and r.value is not None]
    sign = 1 if search.doc.objective.direction == "maximize" else -1
    best = max((sign * r.value for r in complete), default=float("nan")) * sign  # type: ignore[operator]
    return {
        "pruner": search.doc.optuna.pruner,
        "trials": len(rows),
        "complete": len(complete),
        "pruned": sum(r.state == "pruned" for r in rows),
        "failed": sum(r.state == "failed" for r in rows),
        "best": best,
        "epochs": total,
        "finetune_epochs": last,
        "seconds": seconds,
        "canonical": runs / opt.user_attrs[CANONICAL_ATTR]["run_key"],
        "metric": search.metric,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "quick_search.yaml"), help="search study YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a study key")
    parser.add_argument("--work-dir", help="where the two runs folders go (default: a temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "pruning.csv"), help="CSV file")
    parser.add_argument("--quick", action="store_true", help="CI size: tests/fixtures/studies/tiny_search.yaml")
    args = parser.parse_args(argv)
    if args.quick:
        args.study = str(ROOT / "tests" / "fixtures" / "studies" / "tiny_search.yaml")
        args.set = ["trials=3", "optuna.pruner=median", "optuna.startup_trials=1", "optuna.warmup_epochs=0", *args.set]
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="crmlab-pruning-"))
    pruned = run_mode(Path(args.study), args.set, None, work, None)
    if pruned["pruner"] == "none":
        parser.error("the study (with --set) has no pruner to compare: set optuna.pruner")
    full = run_mode(Path(args.study), args.set, "none", work, pruned["canonical"])
    rows = [{"mode": "with pruning", **pruned}, {"mode": "without pruning", **full}]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    ratio = pruned["epochs"] / full["epochs"] if full["epochs"] else float("nan")
    lines = [
        f"| {' | '.join(COLUMNS)} |",
        f"|{'---|' * len(COLUMNS)}",
        *(
            "| "
            + " | ".join(
                f"{r[c]:.4f}" if c == "best" else f"{r[c]:.0f}" if c == "seconds" else str(r[c]) for c in COLUMNS
            )
            + " |"
            for r in rows
        ),
        "",
        f"study {args.study} {' '.join('--set ' + s for s in args.set)}; best = best {pruned['metric']} of a complete "
        f"trial; epochs = all epochs trained (canonical excluded)",
        f"epochs with pruning / without: {ratio:.2f}; best with - without: {pruned['best'] - full['best']:+.4f}",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
