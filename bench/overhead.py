"""Framework overhead: canonical CRMnet assembled from its graph spec vs the same network hand-written in plain
Keras 3 (``bench/crmnet_keras.py``), same backend, batch and compile settings, training steps interleaved in one
process. Goal: assembled >= 1.00x the hand-written model's steps/s.

    python bench/overhead.py                 # canonical CRMnet (34,170,289 parameters), batch 64
    python bench/overhead.py --quick         # CI size: width 8, one transformer block (crmnet_keras.QUICK), batch 8

Writes a CSV (``--out``) and prints the table last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from crmnet_keras import QUICK, build_crmnet

from crmlab.blocks.assemble import parameter_counts
from crmlab.registry import load_graph, parse_graph, resolve_graph
from crmlab.runners.benchmark import (
    bench_recipe,
    compiled_model,
    interleaved_steps,
    random_batch,
    text_table,
    write_csv,
)
from crmlab.runners.parallel import make_distribution
from crmlab.runners.training import compile_for_training

ROOT = Path(__file__).resolve().parents[1]
CANONICAL_PARAMETERS = 34_170_289


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="slim CRMnet (crmnet_keras.QUICK), batch 8, 2 rounds of 1 step"
    )
    parser.add_argument("--batch-size", type=int, help="sequences per step (default 64; quick 8)")
    parser.add_argument("--rounds", type=int, help="rounds of interleaved timing (default 6; quick 2)")
    parser.add_argument("--steps-per-round", type=int, help="timed steps per model per round (default 2; quick 1)")
    parser.add_argument("--precision", default="float32", help="Keras dtype policy of both models")
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"], help="recipe.jit_compile")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/overhead.csv", help="CSV file")
    args = parser.parse_args(argv)

    hand_params = QUICK if args.quick else {}
    batch = args.batch_size or (8 if args.quick else 64)
    rounds = args.rounds or (2 if args.quick else 6)
    per_round = args.steps_per_round or (1 if args.quick else 2)
    jit = {"true": True, "false": False}.get(args.jit_compile, args.jit_compile)

    if args.quick:
        params = {**QUICK, "kernel_size": 11, "se_ratio": 2}  # the hand-written model's fixed kernel and SE ratio
        quick = {"name": "crmnet_overhead_quick", "template": {"name": "crmnet_unet", "params": params}}
        graph = resolve_graph(parse_graph(quick, "overhead --quick"))
    else:
        graph = resolve_graph(load_graph(ROOT / "studies/graphs/crmnet.yaml"))
    recipe = bench_recipe(args.precision, batch, "none", jit_compile=jit)
    assembled, _ = compiled_model(graph, recipe)
    dist = make_distribution("none")
    with dist.scope():
        hand = build_crmnet(**hand_params)
        compile_for_training(hand, recipe, recipe.stages[0], 1000, dist)
    counts = {"assembled": parameter_counts(assembled)["total"], "hand_written": parameter_counts(hand)["total"]}
    if counts["assembled"] != counts["hand_written"]:
        raise SystemExit(f"parameter counts differ: {counts}")
    if not args.quick and counts["assembled"] != CANONICAL_PARAMETERS:
        raise SystemExit(f"canonical CRMnet has {counts['assembled']:,} parameters, expected {CANONICAL_PARAMETERS:,}")

    x, y = random_batch((112,), batch)
    times = interleaved_steps(
        {"assembled": assembled, "hand_written": hand}, x, y, rounds, per_round, warmup=1 if args.quick else 2
    )
    rate = {name: 1.0 / statistics.median(t) for name, t in times.items()}
    rows = [
        {
            "model": name,
            "spec": graph.name,
            "parameters": counts[name],
            "backend": keras.config.backend(),
            "jit_compile": str(model.jit_compile),
            "precision": args.precision,
            "batch_size": batch,
            "timed_steps": len(times[name]),
            "ms_per_step": round(1000 / rate[name], 1),
            "steps_per_s": round(rate[name], 3),
            "seq_per_s": round(rate[name] * batch, 2),
            "ratio_vs_hand_written": round(rate[name] / rate["hand_written"], 3),
        }
        for name, model in (("assembled", assembled), ("hand_written", hand))
    ]
    write_csv(rows, args.out)
    print(f"table: {args.out}")
    print(text_table(rows))
    print(f"overhead ratio (assembled / hand-written steps/s): {rate['assembled'] / rate['hand_written']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
