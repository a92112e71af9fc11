"""Known transcription-factor motifs (JASPAR), PWM scanning, and the per-motif saliency/expression table.

Motifs come from the JASPAR databases that the ``pyjaspar`` package ships (SQLite files inside the package; nothing
is downloaded). Scanning is memelite's FIMO: log-odds scores ``log2(p / 0.25)`` against a uniform background, an
exact score -> p-value table per motif, both strands, hits kept below a p-value threshold. Hits that reach into a
sequence's padding are dropped.

The per-motif table follows the CRMnet paper's Fig. 5F/G: for each motif the number of hits, the mean saliency at
hit positions against the mean over all positions, and the mean measured expression of sequences with and without
a hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crmlab.registry import CrmlabError

__all__ = [
    "BASES",
    "DEFAULT_RELEASE",
    "HIT_COLUMNS",
    "Motif",
    "coverage",
    "jaspar_motifs",
    "motif_table",
    "one_hot",
    "scan",
]

BASES = "ACGT"
DEFAULT_RELEASE = "JASPAR2026"
HIT_COLUMNS = ["motif", "name", "sequence", "start", "end", "strand", "score", "p_value"]


@dataclass(frozen=True, eq=False)
class Motif:
    """A position frequency matrix.

    Attributes:
        matrix_id: JASPAR matrix id (``MA0265.3``).
        name: transcription factor name (``ABF1``).
        counts: ``(4, width)`` site counts of A, C, G, T per motif position.
    """

    matrix_id: str
    name: str
    counts: np.ndarray

    @property
    def width(self) -> int:
        return int(self.counts.shape[1])

    def probabilities(self, pseudocount: float = 0.1) -> np.ndarray:
        """Base probabilities ``(4, width)``: ``(counts + pseudocount / 4) / (sites + pseudocount)`` per column
        (FIMO's motif pseudocount with a uniform background)."""
        counts = np.asarray(self.counts, dtype=np.float64)
        return (counts + pseudocount / 4) / (counts.sum(axis=0, keepdims=True) + pseudocount)

    @property
    def label(self) -> str:
        return f"{self.matrix_id} {self.name}"


def jaspar_motifs(
    release: str = DEFAULT_RELEASE,
    collection: str = "CORE",
    tax_group: str = "fungi",
    names: Sequence[str] = (),
) -> list[Motif]:
    """The latest version of every matrix of a JASPAR collection and taxonomic group, from pyjaspar's shipped DB.

    Args:
        release: the JASPAR release (pyjaspar ships JASPAR2014 ... JASPAR2026).
        collection: the JASPAR collection (``CORE``).
        tax_group: the taxonomic group (``fungi`` holds the yeast factors).
        names: keep only these factor names or matrix ids (case-insensitive); empty keeps all.

    Returns:
        The motifs, ordered by matrix id.

    Raises:
        CrmlabError: an unknown release, or no motif left.
    """
    from pyjaspar import jaspardb

    releases = jaspardb().get_releases()
    if release not in releases:
        raise CrmlabError(f"--jaspar-release: no JASPAR release '{release}' (pyjaspar ships: {', '.join(releases)})")
    found = jaspardb(release=release).fetch_motifs(collection=collection, tax_group=[tax_group], all_versions=False)
    wanted = {n.upper() for n in names}
    motifs = [
        Motif(m.matrix_id, m.name, np.array([m.counts[b] for b in BASES], dtype=np.float64))
        for m in found
        if not wanted or m.name.upper() in wanted or m.matrix_id.upper() in wanted
    ]
    if not motifs:
        what = f" named {', '.join(names)}" if names else ""
        raise CrmlabError(f"--motifs: no {collection} {tax_group} motifs{what} in {release}")
    return sorted(motifs, key=lambda m: m.matrix_id)


def one_hot(tokens: np.ndarray) -> np.ndarray:
    """Tokens ``(n, length)`` (1..4 = A, C, G, T) -> ``float32`` ``(n, 4, length)``; N is an all-zero column."""
    return np.stack([tokens == b + 1 for b in range(len(BASES))], axis=1).astype(np.float32)


def scan(
    motifs: Sequence[Motif],
    tokens: np.ndarray,
    lengths: np.ndarray,
    p_value: float = 1e-4,
    pseudocount: float = 0.1,
) -> pd.DataFrame:
    """Scan both strands of every sequence with every motif (memelite's FIMO).

    Args:
        motifs: the motifs.
        tokens: ``(n, length)`` tokens.
        lengths: ``(n,)`` real sequence lengths; hits reaching past them (into padding) are dropped.
        p_value: report hits with a p-value below this.
        pseudocount: motif pseudocount (:meth:`Motif.probabilities`).

    Returns:
        One row per hit: ``motif`` (matrix id), ``name``, ``sequence`` (row index), 0-based ``start``, exclusive
        ``end``, ``strand`` (``+``/``-``: the motif or its reverse complement matches the given strand), log-odds
        ``score`` (bits) and ``p_value``; sorted by motif, sequence and start.
    """
    from memelite import fimo

    if len(tokens) == 0 or not motifs:
        return pd.DataFrame(columns=HIT_COLUMNS)
    pwms = {m.matrix_id: m.probabilities(pseudocount) for m in motifs}
    frames = [f for f in fimo(pwms, one_hot(tokens), threshold=p_value) if len(f)]
    if not frames:
        return pd.DataFrame(columns=HIT_COLUMNS)
    hits = pd.concat(frames, ignore_index=True).rename(
        columns={"motif_name": "motif", "sequence_name": "sequence", "p-value": "p_value"}
    )
    hits["sequence"] = hits["sequence"].astype(np.int64)
    hits = hits[hits["end"].to_numpy() <= np.asarray(lengths)[hits["sequence"].to_numpy()]]
    names = {m.matrix_id: m.name for m in motifs}
    hits["name"] = hits["motif"].map(names)
    return hits[HIT_COLUMNS].sort_values(["motif", "sequence", "start", "strand"], ignore_index=True)


def coverage(hits: pd.DataFrame, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(n, length)`` mask of the positions covered by at least one of ``hits``."""
    diff = np.zeros((shape[0], shape[1] + 1), dtype=np.int32)
    rows = hits["sequence"].to_numpy(dtype=np.int64)
    np.add.at(diff, (rows, hits["start"].to_numpy(dtype=np.int64)), 1)
    np.add.at(diff, (rows, hits["end"].to_numpy(dtype=np.int64)), -1)
    return np.cumsum(diff, axis=1)[:, : shape[1]] > 0


def motif_table(
    motifs: Sequence[Motif],
    hits: pd.DataFrame,
    saliency: np.ndarray,
    lengths: np.ndarray,
    values: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per motif: hits, saliency at hit positions vs all positions, expression with vs without the motif.

    Args:
        motifs: the scanned motifs (every one gets a row, hits or not).
        hits: :func:`scan` output.
        saliency: ``(n, length)`` per-position saliency (gradient x input at the observed base).
        lengths: ``(n,)`` real sequence lengths (positions past them are padding and ignored).
        values: ``(n,)`` measured expression, or None.

    Returns:
        One row per motif, most hits first: ``motif``, ``name``, ``width``, ``hits``, ``sequences`` (with a hit),
        ``saliency_at_hits`` / ``saliency_all`` (mean signed saliency over the covered / all real positions),
        ``abs_saliency_at_hits`` / ``abs_saliency_all`` and their ratio ``abs_saliency_ratio``, and with values
        ``expression_with`` / ``expression_without`` (means over sequences with / without a hit) and
        ``expression_p`` (two-sided Mann-Whitney U test).
    """
    from scipy.stats import mannwhitneyu

    n, length = saliency.shape
    real = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
    signed_all = float(saliency[real].mean()) if real.any() else float("nan")
    abs_all = float(np.abs(saliency[real]).mean()) if real.any() else float("nan")
    groups = dict(tuple(hits.groupby("motif", sort=False))) if len(hits) else {}
    rows = []
    for m in motifs:
        mh = groups.get(m.matrix_id, hits.iloc[:0])
        covered = coverage(mh, (n, length)) & real
        at = saliency[covered]
        row = {
            "motif": m.matrix_id,
            "name": m.name,
            "width": m.width,
            "hits": len(mh),
            "sequences": int(mh["sequence"].nunique()),
            "saliency_at_hits": float(at.mean()) if at.size else float("nan"),
            "saliency_all": signed_all,
            "abs_saliency_at_hits": float(np.abs(at).mean()) if at.size else float("nan"),
            "abs_saliency_all": abs_all,
        }
        row["abs_saliency_ratio"] = row["abs_saliency_at_hits"] / abs_all if at.size and abs_all > 0 else float("nan")
        if values is not None:
            has = np.zeros(n, dtype=bool)
            has[mh["sequence"].to_numpy(dtype=np.int64)] = True
            with_, without = values[has], values[~has]
            row["expression_with"] = float(with_.mean()) if with_.size else float("nan")
            row["expression_without"] = float(without.mean()) if without.size else float("nan")
            both = with_.size and without.size
            row["expression_p"] = float(mannwhitneyu(with_, without).pvalue) if both else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["hits", "motif"], ascending=[False, True], ignore_index=True)
