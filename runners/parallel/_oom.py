"""Telling an out-of-memory failure from any other: the worker pool retries those with fewer processes sharing the
memory (:mod:`crmlab.runners.parallel._pool`), and the step-time benchmark leaves their cell blank instead of failing
(:mod:`crmlab.runners.benchmark._step_time`).
"""

from __future__ import annotations

__all__ = ["OOM_MARKERS", "is_out_of_memory"]

OOM_MARKERS = (
    "out of memory",
    "resource_exhausted",
    "resource exhausted",
    "oom when allocating",
    "failed to allocate",
    "cuda_error_out_of_memory",
)
"""Lower-case fragments of an exception's type and message that mean an allocation failed (TensorFlow, JAX/XLA,
CUDA and the host)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception reports exhausted memory, on an accelerator or the host.

    Args:
        exc: the exception raised by a task or a measured step.

    Returns:
        ``True`` for a :class:`MemoryError` or an exception whose type name or message contains one of
        :data:`OOM_MARKERS` (case-insensitive).
    """
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(marker in text for marker in OOM_MARKERS)
