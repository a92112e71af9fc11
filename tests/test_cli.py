"""The ``crmlab`` command: build output, resolved specs, block listing, Keras-free spec handling, and one spelling
per option across commands (``--runs-dir``, ``--jobs``, ``-o``) with the former spellings still accepted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crmlab.cli import build_parser, main
from crmlab.registry import parse_graph, yamlio

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "studies" / "graphs"


def test_build_prints_the_canonical_parameter_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(GRAPHS / "crmnet.yaml")]) == 0
    out = capsys.readouterr().out
    assert "crmnet: 34,170,289 total parameters (34,165,681 trainable, 4,608 non-trainable)" in out
    assert "trunk   transformer_encoder" in out and "25,777,152" in out


def test_resolved_prints_an_explicit_spec_that_parses_back(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(GRAPHS / "crmnet_small.yaml"), "--resolved"]) == 0
    doc = yamlio.loads(capsys.readouterr().out)
    spec = parse_graph(doc, "resolved.yaml")
    assert spec.template is None and spec.nodes["enc3"].params["filters"] == 64


def test_blocks_lists_every_builtin_with_origin_and_params(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["blocks"]) == 0
    out = capsys.readouterr().out
    assert "se_conv_encoder  (x) -> (out, skip)" in out
    assert "origin: crmlab " in out and "se_ratio: int >= 1 | null = 2" in out
    assert "crmnet_unet" in out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2


def test_spec_parsing_and_validation_do_not_import_keras() -> None:
    code = (
        "import sys\n"
        "from registry.core import Registry\n"
        "from registry.spec import load_graph\n"
        "from registry.validate import resolve_graph\n"
        "reg = Registry()\n"
        "reg.register('conv', lambda filters, kernel_size=3: None, origin='test')\n"
        f"spec = load_graph({str(GRAPHS / 'crmnet_small.yaml')!r})\n"
        "from registry.validate import expand_template\n"
        "assert len(expand_template(spec).nodes) == 12\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'Keras was imported'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_build_on_each_backend_in_a_fresh_process(backend: str) -> None:
    pytest.importorskip(backend)
    proc = subprocess.run(
        [sys.executable, "-m", "crmlab.cli", "build", "studies/graphs/crmnet.yaml", "--backend", backend],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        f"crmnet: 34,170,289 total parameters (34,165,681 trainable, 4,608 non-trainable) on {backend}" in proc.stdout
    )
    assert proc.stderr.strip() == "", proc.stderr


def test_runs_takes_runs_dir_like_every_command_and_the_old_positional_still_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    new = capsys.readouterr().out
    assert "0 runs (none); " in new and str(runs) in new
    assert main(["runs", str(runs)]) == 0  # the former spelling, kept for existing scripts
    assert capsys.readouterr().out == new
    assert main(["runs", str(runs), "--runs-dir", str(runs)]) == 0  # the same folder twice is no conflict
    assert main(["runs", str(tmp_path), "--runs-dir", str(runs)]) == 2
    assert "name one runs folder" in capsys.readouterr().err
    assert main(["runs", "--runs-dir", str(tmp_path / "nowhere")]) == 2
    with pytest.raises(SystemExit):  # the positional is hidden from the help
        main(["runs", "--help"])
    usage = capsys.readouterr().out
    assert "--runs-dir RUNS_DIR" in usage and "[RUNS_DIR]" not in usage


@pytest.mark.parametrize("command", ["ablate", "search"])
def test_jobs_names_the_worker_processes_of_ablate_and_search_and_workers_still_works(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    assert parser.parse_args([command, "s.yaml", "--jobs", "3"]).workers == 3
    assert parser.parse_args([command, "s.yaml", "--workers", "2"]).workers == 2  # search's former spelling
    assert parser.parse_args([command, "s.yaml"]).workers is None
    with pytest.raises(SystemExit):
        main([command, "--help"])
    usage = capsys.readouterr().out
    assert "--jobs N" in usage and "--workers" not in usage


def test_bench_out_has_the_short_form_of_predict_and_explain() -> None:
    assert build_parser().parse_args(["bench", "spec.yaml", "-o", "t.csv"]).out == "t.csv"
