"""The folder each process of a run trains in: the run folder, under its lock, for the chief (or a process alone),
and a private scratch copy of it for every other process."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from crmlab.runners.parallel._jax_processes import barrier, is_chief, process_count, process_index
from crmlab.runners.rundir import LOCK, run_lock

__all__ = ["run_folder"]


def _copy_run(run_dir: Path, scratch: Path) -> Path:
    """A copy of the chief's run folder in ``scratch``, beside links to the finished stage caches there are now."""
    folder = scratch / run_dir.name
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns(LOCK))
    stages = scratch / "_stages"
    stages.mkdir()
    found = run_dir.parent / "_stages"
    for cached in sorted(found.iterdir()) if found.is_dir() else []:
        if (cached / "stage.json").exists():
            (stages / cached.name).symlink_to(cached.resolve(), target_is_directory=True)
    return folder


@contextlib.contextmanager
def run_folder(run_dir: Path) -> Iterator[Path]:
    """The folder this process trains the run in, for the ``with`` block.

    A process alone, or the chief, holds the run's lock and yields ``run_dir`` (which must exist). Another process
    of a multi-process run takes no lock: once the chief holds it, it copies the chief's run folder to a private
    scratch folder and yields that (removed afterwards), and leaves the block only when the chief has finished
    (its outputs are in ``run_dir``).

    Args:
        run_dir: the run's folder in the runs folder.

    Yields:
        The folder to train the run in.
    """
    if process_count() == 1:
        with run_lock(run_dir):
            yield run_dir
        return
    names = [f"crmlab-{run_dir.name}-{step}" for step in ("locked", "copied", "finished")]
    if is_chief():
        with run_lock(run_dir):
            barrier(names[0])
            barrier(names[1])  # the others copied the run folder; now it may change
            yield run_dir
        barrier(names[2])
        return
    barrier(names[0])
    with tempfile.TemporaryDirectory(prefix=f"crmlab-process{process_index()}-") as scratch:
        folder = _copy_run(run_dir, Path(scratch))
        barrier(names[1])
        yield folder
        barrier(names[2])
