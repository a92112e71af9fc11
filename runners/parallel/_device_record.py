"""A run's record of the devices, processes and global batch it trains with, which refuses a resume on another
device count."""

from __future__ import annotations

import os

from crmlab.registry import CrmlabError
from crmlab.runners.parallel._jax_processes import process_count
from crmlab.runners.rundir import CheckpointState
from crmlab.runners.studyfile import Recipe

__all__ = ["ALLOW_DEVICE_CHANGE", "record_devices"]

ALLOW_DEVICE_CHANGE = "CRMLAB_ALLOW_DEVICE_CHANGE"
"""Set to 1 to resume a run on another device count than it started on (its global batch then changes)."""


def record_devices(state: CheckpointState, recipe: Recipe, replicas: int) -> dict[str, str]:
    """Record the devices (over all processes), processes and global batch per stage a run trains with in its
    ``state`` (committed with its next checkpoint), as MLflow tags.

    A run resumed on another device count would change its global batch, so its result, midway: refused unless
    ``CRMLAB_ALLOW_DEVICE_CHANGE=1``.

    Returns:
        The tags ``crmlab.devices``, ``crmlab.processes`` and ``crmlab.global_batch`` (one number, or
        ``stage=batch`` pairs when the stages' batches differ).

    Raises:
        CrmlabError: the run started on another device count.
    """
    before = state["devices"]
    if before is not None and before != replicas and os.environ.get(ALLOW_DEVICE_CHANGE) != "1":
        batch = recipe.batch_size
        raise CrmlabError(
            f"{state.run_dir}: this run started on {before} device(s) (global batch {batch * before}) and this "
            f"process has {replicas} (global batch {batch * replicas}); resume it on {before}, or set "
            f"{ALLOW_DEVICE_CHANGE}=1 to go on with the new global batch"
        )
    batches = {stage.name: (stage.batch_size or recipe.batch_size) * replicas for stage in recipe.stages}
    state["devices"], state["processes"], state["global_batch"] = replicas, process_count(), batches
    sizes = set(batches.values())
    batch_tag = str(sizes.pop()) if len(sizes) == 1 else ",".join(f"{k}={v}" for k, v in batches.items())
    return {"crmlab.devices": str(replicas), "crmlab.processes": str(process_count()), "crmlab.global_batch": batch_tag}
