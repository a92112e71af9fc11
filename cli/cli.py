"""The ``crmlab`` command's entry point: parse the command line, prepare the process, run the chosen command.

Every user mistake (bad YAML, unknown block, wrong parameter, impossible shape) is printed as one line
``FILE: key.path: message`` on stderr and exits with code 2, without a traceback. The sub-commands live in their
own modules (:mod:`crmlab.parser` assembles them); Keras is imported only after the backend named by ``--backend``
is selected, and after ``--jobs`` worker processes are placed on the GPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

from crmlab import options
from crmlab.parser import build_parser
from crmlab.registry import CrmlabError
from crmlab.runners.parallel import import_keras_quietly

__all__ = ["build_parser", "main"]


def _use_backend(backend: str | None) -> None:
    """Select the Keras backend; must run before Keras is first imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if backend:
        loaded = sys.modules.get("keras")
        if loaded is not None and loaded.config.backend() != backend:
            raise CrmlabError(f"--backend: Keras is already running on {loaded.config.backend()}")
        os.environ["KERAS_BACKEND"] = backend
    import_keras_quietly()


def _place(args: argparse.Namespace) -> AbstractContextManager[None]:
    """Plan where ``--jobs`` worker processes run (:mod:`crmlab.runners.parallel._placement`) into ``args.slots``;
    must run before Keras is imported. With several workers this process keeps off every accelerator while the
    command runs (it only loads the study and collects results); a single worker is this process, restricted to its
    slot's GPUs."""
    if not hasattr(args, "gpus_per_run"):
        return nullcontext()
    from crmlab.runners.parallel import accelerators_hidden, detect_gpus, placement_text, plan_slots

    if args.workers == 0:
        if getattr(args, "command", None) not in ("ablate", "search") or not getattr(args, "storage", None):
            raise CrmlabError(
                f"crmlab {args.command}: --jobs 0: only with --storage URL on ablate and search (drive only: crmlab "
                "worker processes train)"
            )
        args.slots = []
        return nullcontext()
    gpus = detect_gpus()
    args.slots = plan_slots(gpus, args.workers, args.gpus_per_run, args.runs_per_gpu)
    if len(args.slots) > 1:
        print(placement_text(args.slots, gpus), flush=True)
        return accelerators_hidden()
    if args.slots[0].gpus and (args.gpus_per_run or args.runs_per_gpu):
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(args.slots[0].gpus)
    return nullcontext()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``crmlab ARGV``; the exit status: 0, 1 (some runs failed) or :data:`crmlab.options.EXIT_USAGE`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from crmlab import __version__

        print(f"crmlab {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return options.EXIT_USAGE
    try:
        with _place(args):
            _use_backend(getattr(args, "backend", None))
            return args.func(args)
    except CrmlabError as exc:
        for line in str(exc).splitlines():
            print(line, file=sys.stderr)
        return options.EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
