"""``--register``: which ablation run is registered, and refusals in one line (exit code 2) before anything trains.

The registrations themselves are tested on trained runs: tests/runners/tracking/test_mlflow_server.py (train, on a real
``mlflow server``), tests/search/arch/test_search.py (search: the best trial, read back from the registry) and
tests/search/ablation/test_ablation_register.py (ablate: a named variant and seed).
"""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

import pytest

from crmlab.cli import main
from crmlab.model_registry import check_ablation_options, register_ablation, register_result, register_search
from crmlab.registry import CrmlabError
from crmlab.runners.inference import register_model
from crmlab.runners.rundir import RunResult
from tests.mlflow_server import free_port

STUDIES = Path(__file__).resolve().parent / "fixtures" / "studies"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "tiny_train.yaml", "--register", "m", "--no-mlflow"], "--register: the model registry is MLflow's"),
        (
            ["search", "tiny_search.yaml", "--register", "m", "--no-mlflow"],
            "--register: the model registry is MLflow's",
        ),
        (["ablate", "tiny_ablation.yaml", "--register-seed", "1"], "--register-seed: only with --register NAME"),
    ],
)
def test_register_mistakes_are_one_line_errors_before_anything_is_loaded(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command, study, *flags = args
    runs = tmp_path / "runs"
    assert main([command, str(STUDIES / study), *flags, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not runs.exists() or not any(runs.iterdir())


def _ablation() -> SimpleNamespace:
    """What check_ablation_options reads of a loaded ablation: variant names, seeds and the path."""
    names = ["canonical", "no_transformer"]
    return SimpleNamespace(
        variants=[SimpleNamespace(name=n) for n in names], doc=SimpleNamespace(seeds=[3, 5]), path="s.yaml"
    )


@pytest.mark.parametrize(
    ("variant", "seed", "expected"),
    [(None, None, ("canonical", 3)), ("no_transformer", 5, ("no_transformer", 5))],
)
def test_ablate_registers_canonical_of_the_first_seed_unless_named(
    variant: str | None, seed: int | None, expected: tuple[str, int]
) -> None:
    args = Namespace(register="m", register_variant=variant, register_seed=seed)
    assert check_ablation_options(args, _ablation()) == expected
    assert check_ablation_options(Namespace(register=None), _ablation()) is None


@pytest.mark.parametrize(
    ("variant", "seed", "message"),
    [
        (
            "no_transformers",
            None,
            "--register-variant: no variant 'no_transformers' in s.yaml (did you mean 'no_transformer'?)",
        ),
        (None, 4, "--register-seed: 4 is not a seed of s.yaml (3, 5)"),
    ],
)
def test_an_unknown_variant_or_seed_is_refused_in_one_line(variant: str | None, seed: int | None, message: str) -> None:
    with pytest.raises(CrmlabError) as error:
        check_ablation_options(Namespace(register="m", register_variant=variant, register_seed=seed), _ablation())
    assert str(error.value) == message


def test_nothing_to_register_is_a_one_line_error(tmp_path: Path) -> None:
    args = Namespace(register="m", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(CrmlabError, match=r"^--register: canonical seed=3 has no finished run in this study; "):
        register_ablation(args, _ablation(), ("canonical", 3), {})
    unlogged = RunResult("0123abcd", tmp_path, {}, [], {}, mlflow_run_id=None)
    with pytest.raises(
        CrmlabError, match=r"^--register: run 0123abcd has no MLflow run \(trained with --no-mlflow\?\)$"
    ):
        register_result(args, unlogged, "s", "train")
    search = SimpleNamespace(doc=SimpleNamespace(name="s"), direction="maximize")
    with pytest.raises(CrmlabError, match=r"^--register: s has no complete trial; nothing registered$"):
        register_search(args, search, [], tmp_path)


def test_an_unreachable_registry_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(CrmlabError) as error:
        register_model(url, "0" * 32, "m", {})
    assert str(error.value).startswith(f"--register: cannot register 'm' in {url}: ")
    assert len(str(error.value).splitlines()) == 1
