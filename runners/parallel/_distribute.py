"""Distribution: one context object over ``tf.distribute`` strategies and ``keras.distribution`` on JAX."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import keras

from crmlab.registry import SpecError
from crmlab.runners.parallel._jax_processes import join_processes

__all__ = ["MULTI_WORKER_UNSUPPORTED", "TPU_UNTESTED", "Distribution", "make_distribution"]

MULTI_WORKER_UNSUPPORTED = (
    "multi_worker: Keras {keras} cannot train under TensorFlow's MultiWorkerMirroredStrategy (fit fails on its "
    "PerReplica batches, with a PyDataset and with a tf.data.Dataset alike); train across processes or machines with "
    "--backend jax and strategy: multi_worker (jax.distributed, one command per process; see the README), or on "
    "every GPU of one machine with mirrored"
)
"""Why ``strategy: multi_worker`` (or ``auto`` with ``TF_CONFIG`` set) is refused on TensorFlow, with what to use."""

TPU_UNTESTED = (
    "strategy tpu: TensorFlow's TPUStrategy path has never run on a TPU (no TPU to test it on); on a TPU VM the "
    "tested path is --backend jax with strategy data_parallel, one crmlab process per VM"
)
"""Printed (standard error) whenever the TensorFlow ``tpu`` strategy is used."""


@dataclass
class Distribution:
    """What the runner needs: a scope to build the model in, the number of replicas and a description."""

    name: str
    replicas: int
    devices: list[str] = field(default_factory=list)
    strategy: Any = None

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        if self.strategy is not None:
            with self.strategy.scope():
                yield
        else:
            yield


def _tf_strategy(name: str) -> Distribution:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        if os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"):
            name = "tpu"
        elif os.environ.get("TF_CONFIG"):
            name = "multi_worker"  # refused below, rather than silently training alone
        else:
            name = "mirrored" if len(gpus) > 1 else "none"
    if name == "none":
        device = gpus[0].name if gpus else tf.config.list_logical_devices("CPU")[0].name
        return Distribution("none", 1, [device])
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif name == "multi_worker":
        raise SpecError("", "recipe.strategy", MULTI_WORKER_UNSUPPORTED.format(keras=keras.__version__))
    elif name == "tpu":
        print(TPU_UNTESTED, file=sys.stderr, flush=True)
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        raise SpecError("", "recipe.strategy", f"'{name}' is a JAX strategy; on TensorFlow use mirrored or tpu")
    devices = list(getattr(strategy.extended, "worker_devices", [])) or [name]
    return Distribution(name, int(strategy.num_replicas_in_sync), devices, strategy)


def _jax_distribution(name: str) -> Distribution:
    import jax

    if name == "multi_worker":  # before JAX first uses a device
        join_processes(name)
    devices = jax.devices()  # every process's devices when the processes are joined
    if name == "auto":
        name = "data_parallel" if len(devices) > 1 else "none"
    if name == "none":
        keras.distribution.set_distribution(None)
        return Distribution("none", 1, [str(devices[0])])
    if name not in ("data_parallel", "multi_worker"):
        raise SpecError(
            "", "recipe.strategy", f"'{name}' is a TensorFlow strategy; on JAX use data_parallel or multi_worker"
        )
    # multi_worker: each process feeds its own slice of every batch (crmlab.runners.parallel._jax_processes), never
    # sharded here
    sharded = name == "data_parallel"
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=sharded))
    return Distribution(name, len(devices), [str(d) for d in devices])


def make_distribution(name: str) -> Distribution:
    """Resolve ``recipe.strategy`` on the active backend (``auto`` picks what the machine has)."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        return _tf_strategy(name)
    if backend == "jax":
        return _jax_distribution(name)
    if name not in ("auto", "none"):
        raise SpecError("", "recipe.strategy", f"strategy '{name}' is not supported on the {backend} backend")
    return Distribution("none", 1, ["default"])
