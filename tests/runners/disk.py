"""What a run folder holds on disk: optimiser state anywhere in it, inside HDF5 files and ``.keras`` archives too."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import h5py


def _h5_names(source: Path | io.BytesIO) -> list[str]:
    names: list[str] = []
    with h5py.File(source, "r") as f:
        f.visit(names.append)
    return names


def optimizer_state_in(folder: Path) -> list[str]:
    """Every place under ``folder`` that holds optimiser state: ``optimizer*`` files, and ``optimizer`` groups or
    datasets inside ``.h5`` files, also those packed in ``.keras`` archives."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith("optimizer"):
            found.append(str(path))
        elif path.suffix == ".h5":
            found += [f"{path}:{n}" for n in _h5_names(path) if "optimizer" in n]
        elif path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    if member.endswith(".h5"):
                        inner = _h5_names(io.BytesIO(archive.read(member)))
                        found += [f"{path}:{member}:{n}" for n in inner if "optimizer" in n]
    return found
