"""The runs folder's manifest: appended safely by concurrent processes, a run recorded once per study and variant,
and a study under way until it records its finish."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from crmlab.runners.rundir import Owner, record_run, record_study
from crmlab.runners.rundir._manifest import read_manifest, studies_under_way


def _append(args: tuple[str, int]) -> None:
    runs, worker = args
    for i in range(40):
        record_run(Path(runs), Owner("study", "ablation", "k", f"v{worker}"), f"{i:016x}", ["a" * 64])
        record_run(Path(runs), Owner("study", "ablation", "k", f"v{worker}"), f"{i:016x}", ["a" * 64])  # again


def test_concurrent_processes_append_whole_records_once(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_append, [(str(tmp_path), w) for w in range(4)])
    records = read_manifest(tmp_path)
    assert len(records) == 4 * 40, "every record whole, each run recorded once per variant"
    assert {(r["variant"], r["run"]) for r in records} == {(f"v{w}", f"{i:016x}") for w in range(4) for i in range(40)}


def test_a_study_is_under_way_until_its_newest_record_is_a_finish(tmp_path: Path) -> None:
    a, b = Owner("a", "train"), Owner("b", "search", "key")
    record_study(tmp_path, a, "start")
    record_study(tmp_path, b, "start")
    record_study(tmp_path, a, "finish")
    assert studies_under_way(read_manifest(tmp_path)) == {"b"}
    record_study(tmp_path, a, "start")  # started again and killed: under way again
    record_study(tmp_path, b, "finish")
    assert studies_under_way(read_manifest(tmp_path)) == {"a"}
    with open(tmp_path / "_manifest.jsonl", "a") as fh:
        fh.write('{"event": "sta')  # a record cut short (a full disk) is skipped; the next starts a new line
    record_study(tmp_path, b, "start")
    assert len(read_manifest(tmp_path)) == 6 and studies_under_way(read_manifest(tmp_path)) == {"a", "b"}
