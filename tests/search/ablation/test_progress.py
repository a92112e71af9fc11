"""The study-level progress line: runs done of the total, elapsed time and the estimate of what remains."""

from __future__ import annotations

from crmlab.search.ablation._progress import StudyProgress, duration_text


def test_progress_lines_count_runs_and_estimate_the_rest_from_the_finished_ones() -> None:
    now = [0.0]
    lines: list[str] = []
    status = StudyProgress(4, lines.append, clock=lambda: now[0])
    status.starting("canonical seed=0")
    now[0] = 120.0
    status.finished("canonical seed=0", "r = 0.7000 (native)")
    now[0] = 125.0
    status.starting("no_se seed=0")
    now[0] = 200.0
    status.finished("no_se seed=0", "FAILED: loss is nan at epoch 2 (diverged)")
    assert lines == [
        "[0/4] training canonical seed=0 (0s elapsed, ? left)",
        "[1/4] canonical seed=0: r = 0.7000 (native) (2m00s elapsed, ~6m00s left)",
        "[1/4] training no_se seed=0 (2m05s elapsed, ~6m15s left)",
        "[2/4] no_se seed=0: FAILED: loss is nan at epoch 2 (diverged) (3m20s elapsed, ~3m20s left)",
    ]
    assert [duration_text(s) for s in (0, 59.6, 61, 3599, 3725)] == ["0s", "1m00s", "1m01s", "59m59s", "1h02m"]
