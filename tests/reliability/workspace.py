"""A scratch copy of the tiny test studies and data, and the checks every reliability test shares.

The workspace mirrors ``tests/fixtures``: ``studies/train.yaml`` (tiny_train), ``studies/ablation.yaml``
(tiny_ablation), ``studies/search.yaml`` (tiny_search), ``studies/tiny_graph.yaml`` and ``data/`` (the small real data
files), so a case can break any one file or key without touching the fixtures.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crmlab.registry import set_path, yamlio

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
STUDY_FILES = {
    "train.yaml": "tiny_train.yaml",
    "ablation.yaml": "tiny_ablation.yaml",
    "search.yaml": "tiny_search.yaml",
    "tiny_graph.yaml": None,
}
DELETE = object()
"""An edit value that removes the key instead of setting it."""


def make_workspace(root: Path) -> Path:
    """Copy the tiny studies (as ``studies/train.yaml``, ``studies/ablation.yaml``, ``studies/search.yaml``) and data
    under ``root``."""
    (root / "studies").mkdir(parents=True, exist_ok=True)
    for target, source in STUDY_FILES.items():
        shutil.copy(FIXTURES / "studies" / (source or target), root / "studies" / target)
    shutil.copytree(FIXTURES / "data", root / "data", dirs_exist_ok=True)
    return root


def edit_yaml(path: Path, edits: Mapping[str, Any]) -> None:
    """Apply dotted-path ``edits`` (``DELETE`` removes a key) to the YAML file at ``path``."""
    doc = yamlio.load(path)
    for key, value in edits.items():
        if value is DELETE:
            *parents, last = key.split(".")
            parent = doc
            for part in parents:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            del parent[last]
        else:
            doc = set_path(doc, key, value, create=True)
    path.write_text(yamlio.dumps(doc))


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    """Write each ``relative path -> text or bytes`` under ``root`` (a trailing ``/`` makes a folder)."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            path.mkdir(exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def check_one_line_error(stderr: str, prefix: str, message: str) -> str:
    """The single stderr line, after checking it starts with ``prefix`` and contains ``message``."""
    assert "Traceback" not in stderr, stderr[-4000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}:\n{stderr[-4000:]}"
    line = lines[0]
    assert line.startswith(prefix), f"{line!r} does not start with {prefix!r}"
    assert message in line[len(prefix) :], f"{message!r} not in {line!r}"
    assert re.match(r"^\S.*: \S", line), f"not 'FILE: key.path: message': {line!r}"
    return line


def mlflow_runs(db: Path) -> list[Any]:
    """Every MLflow run (any experiment, any state) in the SQLite store ``db``; none if the store was never made."""
    if not db.exists():
        return []
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(ids, run_view_type=ViewType.ALL) if ids else []


def run_dirs(runs: Path) -> list[Path]:
    """Everything written under a runs directory (run folders, stage caches, study state)."""
    return sorted(runs.rglob("*")) if runs.exists() else []


def publish_served(root: Path, url: str, name: str, **replace: Any) -> Path:
    """Publish, in the Optuna storage at ``url``, what ``crmlab ablate studies/ablation.yaml --storage URL --jobs 0``
    stores for its workers (its :class:`~crmlab.search.served.Record`, with ``replace``'s fields replaced) under the
    study ``name``, with the runs folder ``root/shared_runs`` marked as the driver marks it. Returns that runs folder.
    """
    import dataclasses

    import optuna

    from crmlab.search.served import KIND_ATTR, Record, runs_marker

    runs = root / "shared_runs"
    record = Record.of_driver(
        "ablation",
        "tiny",
        root / "studies" / "ablation.yaml",
        [],
        runs,
        runs_marker(runs, create=True),
        None,
        None,
        url.split(":", 1)[0],
        30,
    )
    study = optuna.create_study(study_name=name, storage=url)
    study.set_user_attr(KIND_ATTR, dataclasses.replace(record, **replace).to_attr())
    return runs


def crmlab_command() -> list[str]:
    """``crmlab`` as a subprocess command, with the interpreter running these tests."""
    return [sys.executable, "-m", "crmlab.cli"]
