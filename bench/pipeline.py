"""Data-pipeline throughput against the model's consumption: tokenise + batch + feed, in sequences per second.

    python bench/pipeline.py            # 61,313 real DREAM sequences; consumer: canonical CRMnet, batch 64
    python bench/pipeline.py --quick    # 2,000 sequences; consumer: the test suite's tiny CRMnet, batch 8 (CI size)

Each pipeline stage's rate is compared with the training rate of the model (measured here with
``crmlab.runners.benchmark._step_time.measure``, or given with ``--model-seq-per-s``); ``headroom`` is how many times
faster the stage is than the model consumes. Writes a CSV (``--out``) and prints the table last.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pandas as pd

from crmlab.runners.benchmark import measure, pipeline_throughput, text_table, write_csv

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data/dream_test_derived_61313.tsv.gz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 sequences and the tiny test graph")
    parser.add_argument("--batch-size", type=int, help="sequences per batch (default 64; quick 8)")
    parser.add_argument("--model-seq-per-s", type=float, help="the model's training rate (default: measure it)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/pipeline.csv", help="CSV file")
    args = parser.parse_args(argv)

    table = pd.read_csv(DATA, sep="\t", nrows=2000 if args.quick else None)
    batch = args.batch_size or (8 if args.quick else 64)
    spec = ROOT / ("tests/fixtures/studies/tiny_graph.yaml" if args.quick else "studies/graphs/crmnet.yaml")
    rates = pipeline_throughput(table["seq"].tolist(), table["expression"].to_numpy(), batch)
    if args.model_seq_per_s:
        model_rate, model = args.model_seq_per_s, f"{spec.stem} (given)"
    else:
        cell = measure(spec, batch_size=batch, steps=2 if args.quick else 5, warmup=1 if args.quick else 2)
        model_rate, model = cell.sequences_per_second or float("nan"), spec.stem
    rows = [
        {
            "stage": stage,
            "sequences": len(table),
            "batch_size": batch,
            "backend": keras.config.backend(),
            "seq_per_s": round(rate, 1),
            "model": model,
            "model_seq_per_s": round(model_rate, 2),
            "headroom": round(rate / model_rate, 1),
        }
        for stage, rate in rates.items()
    ]
    write_csv(rows, args.out)
    print(f"table: {args.out}")
    print(text_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
