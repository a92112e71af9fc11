"""Argument parsing pieces of the ``crmlab`` command: its parser class, argument types, and the flags shared by
several sub-commands, each declared once as an argparse parent parser.

A sub-command lists the shared flags it takes: ``sub.add_parser(NAME, parents=[keras_backend(), tracking_uri()])``.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = [
    "EXIT_USAGE",
    "KERAS_BACKENDS",
    "Parser",
    "jobs_count",
    "keras_backend",
    "no_mlflow",
    "overrides",
    "placement",
    "positive_int",
    "register",
    "runs_dir",
    "study_run",
    "tracking_uri",
]

EXIT_USAGE = 2
"""The exit status of a usage error (a bad flag, a bad study file)."""
KERAS_BACKENDS = ("tensorflow", "jax")


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``crmlab train: --verbose: invalid choice ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: MESSAGE (see PROG --help)`` and exit with :data:`EXIT_USAGE`."""
        self.exit(EXIT_USAGE, f"{self.prog}: {message.removeprefix('argument ')} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An argument type: an integer of at least 1 (``--jobs``, ``--port``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def jobs_count(text: str) -> int:
    """An argument type: an integer of at least 0 (``--jobs``; 0 means drive only, with ``--storage``)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {text!r}")
    return value


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def overrides() -> argparse.ArgumentParser:
    """``--set KEY=VALUE`` (repeatable): override a key of the study file."""
    parent = _parent()
    parent.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a study key")
    return parent


def keras_backend(text: str = "Keras backend") -> argparse.ArgumentParser:
    """``--backend``: the Keras backend, selected before Keras is imported; ``text`` is its help."""
    parent = _parent()
    parent.add_argument("--backend", choices=list(KERAS_BACKENDS), help=text)
    return parent


def tracking_uri() -> argparse.ArgumentParser:
    """``--tracking-uri``: the MLflow tracking store."""
    parent = _parent()
    parent.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    return parent


def no_mlflow(text: str = "do not log to MLflow") -> argparse.ArgumentParser:
    """``--no-mlflow``: log nothing to MLflow; ``text`` is its help."""
    parent = _parent()
    parent.add_argument("--no-mlflow", action="store_true", help=text)
    return parent


def runs_dir() -> argparse.ArgumentParser:
    """``--runs-dir``: the folder of run directories."""
    parent = _parent()
    parent.add_argument("--runs-dir", help="run directories (default: CRMLAB_RUNS or ./crmlab-runs)")
    return parent


def study_run() -> list[argparse.ArgumentParser]:
    """The flags of every command that trains a study: ``--set``, ``--backend``, ``--tracking-uri``, ``--runs-dir``
    and ``--no-mlflow``."""
    return [overrides(), keras_backend(), tracking_uri(), runs_dir(), no_mlflow()]


def placement(what: str) -> argparse.ArgumentParser:
    """``--jobs N`` (``what``, e.g. "train runs", in N local worker processes) and how they share the GPUs:
    ``--gpus-per-run`` and ``--runs-per-gpu``. ``--workers N``, ``crmlab search``'s former spelling of ``--jobs``,
    is still accepted (hidden from the help)."""
    parent = _parent()
    parent.add_argument(
        "--jobs",
        dest="workers",
        type=jobs_count,
        metavar="N",
        help=f"{what} in N local worker processes (default: one per GPU group times --runs-per-gpu; 1 without GPUs;"
        " 0 with ablate --storage: drive only, crmlab worker processes train)",
    )
    parent.add_argument("--workers", dest="workers", type=positive_int, help=argparse.SUPPRESS)  # former spelling
    parent.add_argument(
        "--gpus-per-run", type=positive_int, metavar="K", help="GPUs per run, data-parallel inside it (default 1)"
    )
    parent.add_argument(
        "--runs-per-gpu",
        type=positive_int,
        metavar="M",
        help="at most M --jobs processes share a GPU, each with 1/M of its memory (default: as --jobs needs)",
    )
    return parent


def register(what: str, variant: bool = False) -> argparse.ArgumentParser:
    """``--register NAME``: register ``what`` (the model a command trains) in the MLflow Model Registry; with
    ``variant`` (``crmlab ablate``) also ``--register-variant`` and ``--register-seed``, which name the run."""
    parent = _parent()
    parent.add_argument(
        "--register",
        metavar="NAME",
        help=f"register {what} in the MLflow Model Registry as a new version of NAME (tags: study, run key, test "
        "metrics)",
    )
    if variant:
        parent.add_argument(
            "--register-variant",
            metavar="VARIANT",
            help="with --register: the variant whose model is registered (default: canonical)",
        )
        parent.add_argument(
            "--register-seed",
            type=int,
            metavar="N",
            help="with --register: the seed of that variant's run (default: the study's first seed)",
        )
    return parent
