"""Helpers for the data-layer tests: lines of the shipped real data files and one-line load errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from crmlab.registry import SpecError
from crmlab.runners.data import DataSource, load

DATA = Path(__file__).resolve().parents[2] / "data"
DREAM = "dream_test_derived_61313.tsv.gz"


def real_lines(name: str = "vaishnav_random_complex_2954.tsv", n: int = 6) -> list[str]:
    """The header and the first ``n`` data lines of a shipped file, as text (no newlines)."""
    opener = gzip.open if name.endswith(".gz") else open
    with opener(DATA / name, "rt") as fh:
        return [next(fh).rstrip("\n") for _ in range(n + 1)]


def two_columns(lines: list[str]) -> list[str]:
    """Keep ``seq`` and ``expression`` (the first two columns) of real TSV lines."""
    return ["\t".join(line.split("\t")[:2]) for line in lines]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def load_error(source: DataSource, base_dir: Path, **kw: object) -> str:
    """The message of the SpecError that loading raises; it must be exactly one line."""
    with pytest.raises(SpecError) as info:
        load(source, base_dir=base_dir, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message
