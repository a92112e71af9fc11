"""Throughput of the real training loop: sequences per second of ``train_run`` (the runner's batches, callbacks,
validation and per-epoch checkpoints) against the bare training step that ``crmlab bench`` times, same model,
backend, batch and precision, in one process. Goal: the loop at least as fast as the step (ratio >= 1.00 would mean
no loop overhead at all; the loop also validates every epoch, which the step does not).

    python bench/fit_throughput.py                 # canonical CRMnet and quarter width, batch 1024, 3 epochs
    python bench/fit_throughput.py --quick         # the suite's tiny test graph, batch 64, 2 epochs of 8 steps (CI)
    python bench/fit_throughput.py --precision mixed_bfloat16 --batch-size 2048 --steps-per-execution 8
    python bench/fit_throughput.py --stages 2    # also the second stage's recompile (pretrain -> fine-tune)

The data are random 112-nt sequences with random values (throughput does not depend on them), 5 % held out for
the per-epoch validation as a real recipe does. Epoch 1 includes compiling; the loop's rate is the median of the
later epochs. Writes a CSV (``--out``) and prints the table last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from crmlab.blocks.assemble import parameter_counts
from crmlab.registry import load_graph, resolve_graph
from crmlab.runners.benchmark import bench_recipe, compiled_model, random_batch, text_table, time_steps, write_csv
from crmlab.runners.data import Dataset
from crmlab.runners.studyfile import Recipe, Split, Stage
from crmlab.runners.training import train_run

ROOT = Path(__file__).resolve().parents[1]
SPECS = {"canonical": "studies/graphs/crmnet.yaml", "quarter": "studies/graphs/crmnet_small.yaml"}
QUICK_SPECS = {"tiny": "tests/fixtures/studies/tiny_graph.yaml"}
"""``--quick``: the test suite's tiny CRMnet (9,519 parameters), as ``bench/device_check.py --quick`` uses: what the
quick run checks is the script, not a model's speed."""
HOLD_OUT = 0.05


def random_dataset(rows: int, length: int = 112, seed: int = 0) -> Dataset:
    """``rows`` random sequences (tokens 1-4, no N) with standard-normal values, as a named data set."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 5, size=(rows, length), dtype=np.uint8)
    return Dataset(tokens, rng.normal(size=rows).astype(np.float32), name="bench", content_hash=f"bench-{rows}-{seed}")


def loop_rate(
    graph_path: Path, precision: str, batch: int, steps: int, epochs: int, per_execution: int = 1, stages: int = 1
) -> dict[str, float]:
    """Train ``stages`` stages of ``epochs`` epochs of ``steps`` steps through :func:`train_run`, every stage on the
    same data (as pretrain -> fine-tune would, on other data); returns the first epoch's seconds, the median seconds
    of the epochs that are not a stage's first, sequences per second (training rows / that median) and, with
    ``stages`` > 1, ``stage_recompile_s``: the largest excess of a later stage's first epoch over that median (the
    time a stage spends compiling again, if it does)."""
    graph = resolve_graph(load_graph(graph_path))
    train_rows = steps * batch
    rows = round(train_rows / (1 - HOLD_OUT))
    split = Split(method="random", validation_fraction=HOLD_OUT)
    names = ["fit"] if stages == 1 else [f"fit{i + 1}" for i in range(stages)]
    recipe = Recipe(
        precision=precision,
        batch_size=batch,
        steps_per_execution=per_execution,
        stages=[Stage(name=name, data="bench", split=split, epochs=epochs) for name in names],
    )
    with tempfile.TemporaryDirectory() as runs:
        result = train_run(graph, recipe, {"bench": random_dataset(rows)}, {}, Path(runs), verbose=0)
    by_stage = [[h["seconds"] for h in result.history if h["stage"] == name] for name in names]
    later = [s for seconds in by_stage for s in seconds[1:]]
    steady = statistics.median(later) if later else by_stage[0][0]
    rate = {"first_epoch_s": by_stage[0][0], "epoch_s": steady, "seq_per_s": train_rows / steady}
    if stages > 1:
        rate["stage_recompile_s"] = max(seconds[0] for seconds in by_stage[1:]) - steady
    return rate


def step_rate(graph_path: Path, precision: str, batch: int, steps: int) -> tuple[float, int]:
    """``crmlab bench``'s measurement: sequences per second of the bare training step; and the parameter count."""
    graph = resolve_graph(load_graph(graph_path))
    model, _ = compiled_model(graph, bench_recipe(precision, batch))
    x, y = random_batch((112,), batch)
    times = time_steps(model, x, y, steps, warmup=2)
    return batch / statistics.median(times), parameter_counts(model)["total"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny test graph, batch 64, 2 epochs of 8 steps")
    parser.add_argument("--specs", nargs="+", choices=sorted({**SPECS, **QUICK_SPECS}), help="models to measure")
    parser.add_argument("--batch-size", type=int, help="sequences per step (default 1024; quick 64)")
    parser.add_argument("--steps", type=int, help="training steps per epoch (default 32; quick 8)")
    parser.add_argument("--epochs", type=int, help="epochs (default 3; quick 2)")
    parser.add_argument("--precision", default="float32", help="Keras dtype policy")
    parser.add_argument("--steps-per-execution", type=int, default=1, help="recipe.steps_per_execution of the loop")
    parser.add_argument("--stages", type=int, default=1, help="stages of --epochs each (2: the stage recompile too)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/fit_throughput.csv", help="CSV file")
    args = parser.parse_args(argv)

    specs = {**SPECS, **QUICK_SPECS}
    names = args.specs or list(QUICK_SPECS if args.quick else SPECS)
    batch = args.batch_size or (64 if args.quick else 1024)
    steps = args.steps or (8 if args.quick else 32)
    epochs = args.epochs or (2 if args.quick else 3)
    rows = []
    for name in names:
        path = ROOT / specs[name]
        step, parameters = step_rate(path, args.precision, batch, steps)
        loop = loop_rate(path, args.precision, batch, steps, epochs, args.steps_per_execution, args.stages)
        rows.append(
            {
                "model": name,
                "parameters": parameters,
                "backend": keras.config.backend(),
                "precision": args.precision,
                "batch_size": batch,
                "steps_per_epoch": steps,
                "steps_per_execution": args.steps_per_execution,
                "first_epoch_s": round(loop["first_epoch_s"], 2),
                "epoch_s": round(loop["epoch_s"], 2),
                "loop_seq_per_s": round(loop["seq_per_s"], 1),
                "step_seq_per_s": round(step, 1),
                "loop_vs_step": round(loop["seq_per_s"] / step, 3),
            }
        )
        if "stage_recompile_s" in loop:
            rows[-1]["stage_recompile_s"] = round(loop["stage_recompile_s"], 2)
    write_csv(rows, args.out)
    print(f"table: {args.out}")
    print(text_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
