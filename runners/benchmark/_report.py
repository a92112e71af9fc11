"""The step-time benchmark's outputs: the table (derived columns, CSV, aligned text or markdown), its MLflow run, and
:func:`run_step_time`, which ``crmlab bench`` calls to measure (:mod:`crmlab.runners.benchmark._step_time`), write and
log it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from crmlab.runners.benchmark._step_time import PAPER_DATASET_SIZE, Cell, step_time_table
from crmlab.runners.tracking import Tracker, flatten

__all__ = ["TABLE_COLUMNS", "log_step_time", "run_step_time", "table_rows", "text_table", "write_csv"]

TABLE_COLUMNS = (
    "spec",
    "backend",
    "strategy",
    "devices",
    "precision",
    "batch_size",
    "jit_compile",
    "ms_per_step",
    "seq_per_s",
    "epoch_hours",
    "steps",
    "error",
)


def table_rows(cells: Sequence[Cell], dataset_size: int = PAPER_DATASET_SIZE) -> list[dict[str, Any]]:
    """One row per cell with the derived columns; unmeasured values are empty strings (blank cells)."""
    rows = []
    for c in cells:
        epoch = c.epoch_seconds(dataset_size)
        rows.append(
            {
                **{f.name: getattr(c, f.name) for f in fields(c) if f.name in TABLE_COLUMNS},
                "ms_per_step": "" if c.seconds_per_step is None else round(1000 * c.seconds_per_step, 1),
                "seq_per_s": "" if c.sequences_per_second is None else round(c.sequences_per_second, 2),
                "epoch_hours": "" if epoch is None else round(epoch / 3600, 2),
            }
        )
    return rows


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path, columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as CSV with ``columns`` (default: the first row's keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(columns or (rows[0].keys() if rows else []))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, markdown: bool = False) -> str:
    """Aligned plain-text (or markdown) table of ``rows``."""
    names = list(columns or (rows[0].keys() if rows else []))
    cells = [[str(r.get(n, "")) for n in names] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        return "\n".join([*lines, *("| " + " | ".join(c) + " |" for c in cells)])
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    out = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    out += ["  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)) for c in cells]
    return "\n".join(out)


def log_step_time(
    rows: Sequence[Mapping[str, Any]],
    csv_path: Path,
    spec: str | Path,
    settings: Mapping[str, Any],
    tracking_uri: str | None = None,
    experiment: str = "bench",
) -> str:
    """Log a step-time table as an MLflow run: settings as params, the best seq/s as a metric, the CSV (and the
    markdown copy beside it, if any) as artifacts. Returns the run id."""
    tracker = Tracker(tracking_uri, experiment)
    run_id = tracker.start(f"step_time {Path(spec).stem}", {"crmlab.bench": "step_time"})
    tracker.log_params(flatten({"spec": str(spec), **settings}))
    rates = [float(r["seq_per_s"]) for r in rows if r.get("seq_per_s") != ""]
    if rates:
        tracker.log_metrics({"best_seq_per_s": max(rates)})
    for path in (csv_path, csv_path.with_suffix(".md")):
        if path.exists():
            tracker.log_artifact(path)
    tracker.end("FINISHED")
    return run_id


def run_step_time(
    spec: str | Path,
    out: Path,
    batch_sizes: Sequence[int] = (32, 64, 128),
    precisions: Sequence[str] = ("float32",),
    backends: Sequence[str] | None = None,
    strategies: Sequence[str] = ("one",),
    steps: int = 5,
    warmup: int = 2,
    jit_compile: bool | str = "auto",
    dataset_size: int = PAPER_DATASET_SIZE,
    tracking_uri: str | None = None,
    mlflow: bool = True,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The step-time benchmark of ``crmlab bench``: measure the table, write it to ``out`` (CSV) and log it to MLflow.

    Returns:
        The table rows (see :func:`table_rows`) and the MLflow run id (``None`` without MLflow).
    """

    def report(cell: Cell) -> None:
        if progress is not None:
            row = table_rows([cell], dataset_size)[0]
            progress(", ".join(f"{k}={row[k]}" for k in TABLE_COLUMNS if row[k] != ""))

    cells = step_time_table(
        spec, batch_sizes, precisions, backends, strategies, steps, warmup, jit_compile, on_cell=report
    )
    rows = table_rows(cells, dataset_size)
    write_csv(rows, out, TABLE_COLUMNS)
    out.with_suffix(".md").write_text(text_table(rows, TABLE_COLUMNS, markdown=True) + "\n")
    run_id = None
    if mlflow:
        settings = {
            "batch_sizes": list(batch_sizes),
            "precisions": list(precisions),
            "backends": sorted({c.backend for c in cells}),
            "strategies": list(strategies),
            "steps": steps,
            "warmup": warmup,
            "jit_compile": jit_compile,
            "dataset_size": dataset_size,
        }
        run_id = log_step_time(rows, out, spec, settings, tracking_uri)
    return rows, run_id
