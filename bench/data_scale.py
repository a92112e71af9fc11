"""Paper-size data: first load, cached load, peak memory, and the memory a worker adds for the cached data.

    python bench/data_scale.py            # 30,722,376 rows of random 110-nt sequences (the paper's training set)
    python bench/data_scale.py --quick    # 20,000 rows (CI size)

The table (``seq``, ``expression``; 3.4 GiB at full size) is written to a temporary folder (``--tmp``) and measured
plain, then gzip-compressed (level 1; ``--forms`` picks one), each time with an empty token cache, in fresh processes:

- ``first``: ``load`` with an empty cache (hash, parse in chunks, tokenise, write the cache): seconds, peak RSS;
- ``cached``: ``load`` again in a new process (the index gives the key, the tokens are mapped): seconds, peak RSS;
- ``worker``: ``--workers`` processes at once (like ``--jobs``) load the cached data, split it 90/10 at random and
  take both parts (``Dataset.subset``): ``split`` columns; then each runs one full epoch of training batches
  (``Batches``, batch 1024) and reads every validation row in batches: ``epoch`` columns. Each reports what it
  added to its memory since before loading (``/proc/self/smaps_rollup``, read once every worker is at the same
  point): ``anon`` (private: row indices, values, targets), ``pss`` (its share of every page: the mapped tokens
  count once among the workers) and ``rss``.

The folder is removed at the end. Writes a CSV (``--out``) and prints the table last, with the issue's goals.
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAPER_ROWS = 30_722_376  # crmlab.runners.benchmark._step_time.PAPER_DATASET_SIZE
SEQ_LENGTH = 110
GOALS = "goals: first load <= 180 s and <= 6,144 MB peak RSS; cached load <= 10 s; worker anon (split, epoch) ~ 0"


def write_table(path: Path, rows: int, seed: int = 0, block: int = 1 << 20) -> None:
    """A TSV of ``rows`` random 110-nt sequences and values ``dd.dddd``, written a block of rows at a time."""
    rng = np.random.default_rng(seed)
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)
    digits = np.frombuffer(b"0123456789", dtype=np.uint8)
    with path.open("wb") as fh:
        fh.write(b"seq\texpression\n")
        for start in range(0, rows, block):
            n = min(block, rows - start)
            line = np.empty((n, SEQ_LENGTH + 9), dtype=np.uint8)
            line[:, :SEQ_LENGTH] = bases[rng.integers(0, 4, (n, SEQ_LENGTH), dtype=np.uint8)]
            value = rng.integers(0, 170_000, n)
            line[:, SEQ_LENGTH] = ord("\t")
            for i, scale in enumerate((100_000, 10_000)):
                line[:, SEQ_LENGTH + 1 + i] = digits[value // scale % 10]
            line[:, SEQ_LENGTH + 3] = ord(".")
            for i, scale in enumerate((1_000, 100, 10, 1)):
                line[:, SEQ_LENGTH + 4 + i] = digits[value // scale % 10]
            line[:, -1] = ord("\n")
            fh.write(line.tobytes())


def gzip_copy(src: Path, dst: Path) -> None:
    """``src`` compressed (gzip level 1) into ``dst``, in blocks."""
    with src.open("rb") as fin, gzip.open(dst, "wb", compresslevel=1) as fout:
        shutil.copyfileobj(fin, fout, 1 << 24)


def _memory() -> dict[str, float]:
    """This process's ``smaps_rollup`` fields in MB (``Rss``, ``Pss``, ``Anonymous``, ...)."""
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        out[name.rstrip(":")] = int(value) / 1024
    return out


def _peak_rss_mb() -> float:
    """This process's peak RSS in MB (``VmHWM``: unlike ``ru_maxrss`` it does not start at a spawning parent's)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _load(table: str, cache: str, queue: Any) -> None:
    """One ``load`` in a fresh process: seconds, rows and peak RSS onto ``queue``."""
    from crmlab.runners.data import DataSource, load

    start = time.perf_counter()
    ds = load(DataSource(path=table), cache_dir=cache)
    queue.put({"seconds": time.perf_counter() - start, "rows": len(ds), "peak_rss_mb": _peak_rss_mb()})


def _worker(table: str, cache: str, seed: int, barrier: Any, queue: Any) -> None:
    """A training worker's data: load (cached), split, one epoch of batches; the memory it added since before
    loading, measured after the split and after the epoch (each time once every worker has got there)."""
    os.environ.setdefault("KERAS_BACKEND", "numpy")  # batches are backend-independent; numpy imports fastest
    from crmlab.runners.data import DataSource, load, split
    from crmlab.runners.training import Batches

    def added() -> dict[str, float]:
        barrier.wait()  # every worker is here: pages they share count once among them
        now = _memory()
        barrier.wait()
        return {k: now[k] - before[k] for k in ("Rss", "Pss", "Anonymous")}

    before = _memory()
    ds = load(DataSource(path=table), cache_dir=cache)
    train, val = (ds.subset(part) for part in split(ds, "random", (0.9, 0.1), seed=seed))
    after_split = added()
    start = time.perf_counter()
    batches = Batches(train.tokens, train.values, 1024, seed=seed)
    for i in range(len(batches)):
        batches[i]
    for i in range(0, len(val), 1024):
        val.tokens[i : i + 1024].astype("int32")
    seconds = time.perf_counter() - start
    queue.put({"epoch_s": seconds, "tokens_mb": ds.tokens.nbytes / 2**20, "split": after_split, "epoch": added()})


def _in_processes(target: Any, args: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Run ``target(*a, queue)`` for each ``a`` in its own fresh process, all at once; their reports. One that
    fails ends the others (which may be waiting for it) and raises."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, queue)) for a in args]
    for p in procs:
        p.start()
    reports: list[dict[str, Any]] = []
    try:
        while len(reports) < len(procs):
            try:
                reports.append(queue.get(timeout=2))
            except Empty:
                if any(p.exitcode for p in procs):
                    raise RuntimeError("a measuring process failed (see its traceback above)") from None
    finally:
        for p in procs:
            if p.exitcode is None and len(reports) < len(procs):
                p.terminate()
            p.join()
    return reports


def measure(table: Path, cache: Path, workers: int) -> dict[str, Any]:
    """The row of one table: first and cached load, and ``workers`` workers' added memory."""
    (first,) = _in_processes(_load, [(str(table), str(cache))])
    (cached,) = _in_processes(_load, [(str(table), str(cache))])
    barrier = mp.get_context("spawn").Barrier(workers)
    done = _in_processes(_worker, [(str(table), str(cache), seed, barrier) for seed in range(workers)])
    row: dict[str, Any] = {
        "table": "gzip" if table.name.endswith(".gz") else "plain",
        "rows": first["rows"],
        "file_mb": round(table.stat().st_size / 2**20),
        "first_load_s": round(first["seconds"], 3),
        "first_peak_rss_mb": round(first["peak_rss_mb"]),
        "cached_load_s": round(cached["seconds"], 3),
        "cached_peak_rss_mb": round(cached["peak_rss_mb"]),
        "workers": workers,
        "tokens_mb": round(done[0]["tokens_mb"]),
        "worker_epoch_s": round(max(d["epoch_s"] for d in done), 1),
    }
    for when in ("split", "epoch"):
        for name, key in (("anon", "Anonymous"), ("pss", "Pss"), ("rss", "Rss")):
            row[f"worker_{when}_{name}_mb"] = round(max(d[when][key] for d in done))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows (CI size)")
    parser.add_argument("--rows", type=int, help=f"rows of the table (default {PAPER_ROWS:,}; quick 20,000)")
    parser.add_argument("--workers", type=int, default=2, help="workers loading the cached data at once")
    parser.add_argument("--forms", nargs="+", choices=("plain", "gzip"), default=["plain", "gzip"], help="tables")
    parser.add_argument("--tmp", type=Path, help="folder for the table and the cache (default: the system's)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/data_scale.csv", help="CSV file")
    args = parser.parse_args(argv)

    rows = args.rows or (20_000 if args.quick else PAPER_ROWS)
    results = []
    folder = Path(tempfile.mkdtemp(prefix="crmlab-data-scale-", dir=args.tmp))
    try:
        plain = folder / "train.tsv"
        start = time.perf_counter()
        write_table(plain, rows)
        print(f"wrote {plain} ({plain.stat().st_size / 2**20:,.0f} MB) in {time.perf_counter() - start:.0f} s")
        if "plain" in args.forms:
            results.append(measure(plain, folder / "cache", args.workers))
            print(results[-1])
            shutil.rmtree(folder / "cache")
        if "gzip" in args.forms:
            zipped = folder / "train.tsv.gz"
            gzip_copy(plain, zipped)
            plain.unlink()
            results.append(measure(zipped, folder / "cache", args.workers))
            print(results[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    from crmlab.runners.benchmark import text_table, write_csv

    write_csv(results, args.out)
    print(f"table: {args.out}")
    print(GOALS)
    print(text_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
