"""A catalogue of malformed graph specs: ``crmlab build`` must report each as one-line errors, exit 2, no traceback.

Each fixture in ``tests/fixtures/bad_specs/`` breaks one thing in a realistic spec. Its first line says what the
user must see::

    # expect: <key.path>: <message substring>

The key path is the dotted path printed after the file name; ``-`` means a whole-document error with no key path
(``FILE: message``) and ``:N`` a YAML problem reported at line N (``FILE:N: message``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from crmlab.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "bad_specs"
SPECS = sorted(FIXTURES.glob("*.yaml"))
EXPECT_PREFIX = "# expect: "
SUBPROCESS_FIXTURE = "20_shape_mismatch_skip.yaml"  # fails at assembly, after Keras/TensorFlow start-up


def expected(path: Path) -> tuple[str, str]:
    """``(line prefix, message substring)`` from the fixture's ``# expect:`` line."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(EXPECT_PREFIX), f"{path.name}: first line must be '{EXPECT_PREFIX}<key.path>: <message>'"
    key, sep, message = first[len(EXPECT_PREFIX) :].partition(": ")
    assert sep and key and message, f"{path.name}: malformed expect line {first!r}"
    if key == "-":
        return f"{path}: ", message
    if re.fullmatch(r":\d+", key):
        return f"{path}{key}: ", message
    return f"{path}: {key}: ", message


def check_line_format(path: Path, lines: list[str]) -> None:
    line_re = re.compile(rf"^{re.escape(str(path))}(:\d+)?: \S")
    for line in lines:
        assert "Traceback" not in line, f"traceback on stderr:\n{chr(10).join(lines)}"
        assert line_re.match(line), f"stderr line not 'FILE: key.path: message': {line!r}"


def test_catalogue_is_large_enough() -> None:
    assert len(SPECS) >= 20, f"only {len(SPECS)} bad-spec fixtures in {FIXTURES}"


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_bad_spec_is_reported(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix, message = expected(path)
    try:
        rc = main(["build", str(path)])
    except Exception as exc:  # an escaping exception is exactly what this test must catch
        pytest.fail(f"crmlab build raised {type(exc).__name__}: {exc}")
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert "Traceback" not in out
    assert rc == 2, f"exit code {rc}, stderr:\n{err}"
    assert lines, "no error on stderr"
    check_line_format(path, lines)
    assert any(line.startswith(prefix) and message in line[len(prefix) :] for line in lines), (
        f"no stderr line starts with {prefix!r} and contains {message!r}; stderr:\n{err}"
    )


def test_real_process_prints_exactly_one_line() -> None:
    path = FIXTURES / SUBPROCESS_FIXTURE
    prefix, message = expected(path)
    proc = subprocess.run(
        [sys.executable, "-m", "crmlab.cli", "build", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, f"exit code {proc.returncode}, stderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}:\n{proc.stderr}"
    check_line_format(path, lines)
    assert lines[0].startswith(prefix) and message in lines[0], lines[0]
