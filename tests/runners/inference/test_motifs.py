"""JASPAR motifs and the PWM scanner: planted sites in real promoter backgrounds, scores against a brute-force scan,
and the per-motif table on hand-made saliency."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmlab.registry import CrmlabError
from crmlab.runners.data import encode
from crmlab.runners.inference import Motif, jaspar_motifs, scan
from crmlab.runners.inference._motifs import BASES, coverage, motif_table
from tests.conftest import read_rows

COMPLEMENT = str.maketrans("ACGT", "TGCA")


@pytest.fixture(scope="module")
def paper_motifs() -> list[Motif]:
    """The five yeast factors the CRMnet paper's saliency found first (Fig. 5), from the shipped JASPAR DB."""
    return jaspar_motifs(names=["REB1", "ABF1", "RAP1", "AZF1", "NHP10"])


def _consensus(m: Motif) -> str:
    return "".join(BASES[i] for i in m.counts.argmax(axis=0))


def _brute_force_scores(m: Motif, seq: str) -> tuple[np.ndarray, np.ndarray]:
    """Log-odds scores (bits) of every window on both strands, written out directly (memelite's PWM: eps 1e-4)."""
    log_odds = np.log2(m.probabilities() + 1e-4) - np.log2(0.25)
    rc_odds = log_odds[::-1, ::-1]
    idx = np.array([BASES.index(b) for b in seq])
    windows = np.lib.stride_tricks.sliding_window_view(idx, m.width)
    cols = np.arange(m.width)
    return log_odds[windows, cols].sum(axis=1), rc_odds[windows, cols].sum(axis=1)


def test_fungi_core_has_the_papers_factors_as_count_matrices(paper_motifs: list[Motif]) -> None:
    assert {m.name.upper() for m in paper_motifs} == {"REB1", "ABF1", "RAP1", "AZF1", "NHP10"}
    for m in paper_motifs:
        assert m.counts.shape == (4, m.width) and m.width >= 6 and (m.counts >= 0).all()
        np.testing.assert_allclose(m.probabilities().sum(axis=0), 1.0)
    assert len(jaspar_motifs()) > 150  # the whole fungi CORE collection
    with pytest.raises(CrmlabError, match="no JASPAR release 'JASPAR1999'"):
        jaspar_motifs("JASPAR1999")


def test_planted_sites_are_found_at_their_positions_and_strands(paper_motifs: list[Motif]) -> None:
    backgrounds = [r["seq"] for r in read_rows("vaishnav_random_complex_2954.tsv", 40)[20:40]]
    rng = np.random.default_rng(7)
    planted = []  # (motif id, sequence, start, strand)
    sequences = []
    for k, seq in enumerate(backgrounds):
        m = paper_motifs[k % len(paper_motifs)]
        strand = "+" if k % 2 == 0 else "-"
        site = _consensus(m) if strand == "+" else _consensus(m).translate(COMPLEMENT)[::-1]
        start = int(rng.integers(20, 90 - m.width))  # inside the 80-nt variable region
        sequences.append(seq[:start] + site + seq[start + m.width :])
        planted.append((m.matrix_id, k, start, strand))
    tokens = encode(sequences)
    lengths = np.array([len(s) for s in sequences])
    hits = scan(paper_motifs, tokens, lengths, p_value=1e-4)
    found = set(zip(hits["motif"], hits["sequence"], hits["start"], hits["strand"], strict=True))
    for motif_id, k, start, strand in planted:
        assert (motif_id, k, start, strand) in found, (motif_id, k, start, strand)
        row = hits[(hits["motif"] == motif_id) & (hits["sequence"] == k) & (hits["start"] == start)]
        width = next(m.width for m in paper_motifs if m.matrix_id == motif_id)
        assert (row["end"] == start + width).all() and (row["p_value"] < 1e-4).all()

    # Every reported score is the window's log-odds score, and no window scoring above a hit's score is missed.
    for m in paper_motifs:
        mine = hits[hits["motif"] == m.matrix_id]
        for k, seq in enumerate(sequences):
            fwd, rev = _brute_force_scores(m, seq)
            rows = mine[mine["sequence"] == k]
            for r in rows.itertuples():
                expected = fwd[r.start] if r.strand == "+" else rev[r.start]
                assert abs(r.score - expected) < 0.1 * m.width  # scores are binned by 0.1 bit per column
            if len(mine):
                weakest = mine["score"].min() + 0.1 * m.width
                strong = {(s, "+") for s in np.flatnonzero(fwd > weakest)} | {
                    (s, "-") for s in np.flatnonzero(rev > weakest)
                }
                assert strong <= set(zip(rows["start"], rows["strand"], strict=True)), (m.name, k)


def test_hits_reaching_into_padding_are_dropped(paper_motifs: list[Motif]) -> None:
    reb1 = next(m for m in paper_motifs if m.name.upper() == "REB1")
    seq = read_rows("vaishnav_native_complex_3929.tsv", 1)[0]["seq"][:100]
    site = _consensus(reb1)
    sequences = [seq[:40] + site + seq[40 + reb1.width :], seq[: 100 - reb1.width] + site]
    full = scan([reb1], encode(sequences), np.array([100, 100]))
    assert (1, 100 - reb1.width) in set(zip(full["sequence"], full["start"], strict=True))
    cut = scan([reb1], encode(sequences), np.array([100, 100 - 2]))  # the second site now runs past the end
    assert not ((cut["sequence"] == 1) & (cut["start"] == 100 - reb1.width)).any()
    assert ((cut["sequence"] == 0) & (cut["start"] == 40)).any()


def test_motif_table_on_hand_made_saliency() -> None:
    motifs = [
        Motif("M1", "one", np.ones((4, 3))),
        Motif("M2", "two", np.ones((4, 2))),
        Motif("M3", "none", np.ones((4, 2))),
    ]
    hits = pd.DataFrame(
        {
            "motif": ["M1", "M1", "M1", "M2"],
            "name": ["one", "one", "one", "two"],
            "sequence": [0, 0, 2, 1],
            "start": [1, 2, 0, 4],
            "end": [4, 5, 3, 6],
            "strand": ["+", "-", "+", "+"],
            "score": [5.0, 5.0, 5.0, 5.0],
            "p_value": [1e-5] * 4,
        }
    )
    saliency = np.arange(3 * 8, dtype=np.float32).reshape(3, 8) - 10  # sequence 0: -10..-3, 1: -2..5, 2: 6..13
    lengths = np.array([8, 6, 8])
    values = np.array([1.0, 2.0, 4.0], dtype=np.float32)
    table = motif_table(motifs, hits, saliency, lengths, values).set_index("motif")
    real = np.concatenate([saliency[0], saliency[1, :6], saliency[2]])
    m1 = np.concatenate([saliency[0, 1:5], saliency[2, 0:3]])  # overlapping hits count each position once
    assert table.loc["M1", "hits"] == 3 and table.loc["M1", "sequences"] == 2
    assert table.loc["M1", "saliency_at_hits"] == pytest.approx(m1.mean())
    assert table.loc["M1", "saliency_all"] == pytest.approx(real.mean())
    assert table.loc["M1", "abs_saliency_ratio"] == pytest.approx(np.abs(m1).mean() / np.abs(real).mean())
    assert table.loc["M2", "saliency_at_hits"] == pytest.approx(saliency[1, 4:6].mean())
    assert table.loc["M1", "expression_with"] == pytest.approx(2.5) and table.loc["M1", "expression_without"] == 2.0
    assert table.loc["M3", "hits"] == 0 and np.isnan(table.loc["M3", "saliency_at_hits"])
    assert table.loc["M3", "expression_without"] == pytest.approx(values.mean())
    assert list(table.index) == ["M1", "M2", "M3"]  # most hits first
    assert coverage(hits[hits["motif"] == "M1"], (3, 8)).sum() == 7
