"""The ``crmlab`` argument parser: the top-level flags and one sub-command per command module."""

from __future__ import annotations

import argparse

from crmlab import (
    ablate_cmd,
    confirm_cmd,
    dashboard,
    interpret,
    options,
    queue_cmd,
    runs,
    search_cmd,
    spec_cmd,
    step_time,
    train_cmd,
    worker_cmd,
)

__all__ = ["build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``crmlab`` argument parser: each command module adds its sub-commands, with the shared flags from
    :mod:`crmlab.options`; a sub-command's ``func`` is its handler."""
    parser = options.Parser(prog="crmlab", description="The ``crmlab`` command.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    spec_cmd.add_parsers(sub)  # blocks, build
    train_cmd.add_parser(sub)
    ablate_cmd.add_parsers(sub)  # ablate, compare
    search_cmd.add_parser(sub)
    confirm_cmd.add_parser(sub)
    interpret.add_parsers(sub)  # predict, explain
    step_time.add_parser(sub)  # bench
    runs.add_parser(sub)
    dashboard.add_parser(sub)
    worker_cmd.add_parser(sub)
    queue_cmd.add_parser(sub)
    return parser
