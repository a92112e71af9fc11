"""The README's multi-machine examples (ssh, a Slurm job array, a Kubernetes Job) name real crmlab options: each
crmlab command line in them parses with the real parser, and the Kubernetes Job is valid YAML of a batch/v1 Job."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from crmlab.parser import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Several machines"


def _section() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    return text[start : text.index("\n### ", start + 1)]


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", _section(), flags=re.S)


def _command_lines(script: str) -> list[list[str]]:
    """The crmlab command lines of a shell script (continuations joined, ``ssh '...'`` bodies opened)."""
    joined = script.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        for match in re.finditer(r"(?:^|[\s'/])crmlab (ablate|worker)\b([^'\n&;]*)", line):
            found.append([match.group(1), *shlex.split(match.group(2))])
    return found


def _parse(argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"README: crmlab {' '.join(argv)}: does not parse (exit {exc.code})")


def test_the_ssh_and_slurm_examples_parse() -> None:
    bash = _blocks("bash")
    assert len(bash) == 2, "the ssh and the Slurm example"
    lines = [argv for block in bash for argv in _command_lines(block)]
    assert [argv[0] for argv in lines] == ["ablate", "worker", "worker"], lines
    for argv in lines:
        _parse(argv)
    assert "#SBATCH --array=" in bash[1]


def test_the_kubernetes_job_is_a_job_running_a_worker() -> None:
    (block,) = _blocks("yaml")
    job = yaml.safe_load(block)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["crmlab", "worker"]
    _parse(command[1:])
