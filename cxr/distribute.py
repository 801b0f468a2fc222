"""Which tf.distribute strategy trains a fold: one device, MirroredStrategy over GPUs, or several
machines.

Several machines: every machine runs the same `cxr train` with `TF_CONFIG` naming the cluster and
its own place in it (https://www.tensorflow.org/guide/distributed_training#TF_CONFIG);
MultiWorkerMirroredStrategy keeps the replicas in step with all-reduces. `train.batch_size` is
always the global batch, split over all replicas of all machines. The chief (the "chief" task, else
worker 0) writes the run folder; the other workers write theirs to a temporary folder that is
deleted afterwards.

Keras 3 (up to at least 3.15) cannot `fit` under MultiWorkerMirroredStrategy as shipped: it reduces
the first batch and every step's logs with calls that fail across workers (keras-team/keras#20585).
`enable_multi_worker_fit` builds the model from the dataset's element spec instead, and all-reduces
the logs as means over replicas, so that every worker sees the same metrics and callbacks decide
alike.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass

import keras
import tensorflow as tf

from cxr.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cluster:
    """This process's place in a TF_CONFIG cluster."""

    workers: int  # chief + workers: the machines that train
    task_type: str
    task_index: int
    has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (
            self.task_type == "worker" and self.task_index == 0 and not self.has_chief
        )


def cluster_from_env(text: str | None = None) -> Cluster | None:
    """The cluster TF_CONFIG describes, or None when it is unset or names one machine; a bad
    TF_CONFIG is a ConfigError."""
    text = os.environ.get("TF_CONFIG") if text is None else text
    if not text:
        return None
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        task_type, task_index = str(task["type"]), int(task["index"])
        workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(
            'TF_CONFIG is not valid: expected JSON like {"cluster": {"worker": ["host1:port", '
            '"host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}'
        ) from None
    if task_type not in ("chief", "worker"):
        raise ConfigError(
            f"TF_CONFIG task type {task_type!r}: cxr trains with chief and worker tasks only"
        )
    tasks = len(cluster.get(task_type, []))
    if not 0 <= task_index < tasks:
        raise ConfigError(
            f"TF_CONFIG task index {task_index} is not in the cluster's {tasks} {task_type} task(s)"
        )
    if workers < 2:
        return None
    return Cluster(workers, task_type, task_index, has_chief="chief" in cluster)


@functools.cache
def make_strategy(devices: tuple[str, ...] | None = None) -> tf.distribute.Strategy:
    """One strategy per process (a multi-worker one cannot be made twice): TF_CONFIG's cluster,
    named devices, all GPUs, or the default."""
    cluster = cluster_from_env()
    if cluster is not None:
        if devices:
            raise ConfigError(
                "train.devices and a multi-machine TF_CONFIG together: each machine uses all its "
                "GPUs; drop train.devices"
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        log.info(
            "training on %d workers, %d replicas (MultiWorkerMirroredStrategy); this is %s %d%s",
            cluster.workers,
            strategy.num_replicas_in_sync,
            cluster.task_type,
            cluster.task_index,
            " (chief)" if cluster.is_chief else "",
        )
        return strategy
    if devices:
        check_devices(devices)
        try:
            strategy = tf.distribute.MirroredStrategy(list(devices))
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"train.devices = {list(devices)!r}: {exc}") from None
        log.info(
            "training on %d devices (MirroredStrategy): %s",
            strategy.num_replicas_in_sync,
            ", ".join(devices),
        )
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        log.info("training on %d GPUs (MirroredStrategy)", len(gpus))
        return tf.distribute.MirroredStrategy()
    log.info("training on %s", "the GPU" if gpus else "the CPU")
    return tf.distribute.get_strategy()


def check_devices(devices: tuple[str, ...]) -> None:
    """Every name in train.devices must be a device this process has (TensorFlow waits forever for
    one it lacks)."""
    available = tf.config.list_logical_devices()
    have = {_device_key(d.name): d.name for d in available}
    listed = ", ".join(d.name.replace("/device:", "/") for d in available)
    keys = []
    for name in devices:
        try:
            key = _device_key(name)
        except ValueError:
            raise ConfigError(
                f"train.devices: {name!r} is not a device name; this machine has: {listed}"
            ) from None
        if key not in have:
            raise ConfigError(f"train.devices: {name!r} is not on this machine; it has: {listed}")
        keys.append(key)
    if len(set(keys)) != len(keys):
        raise ConfigError(f"train.devices = {list(devices)!r} names a device twice")


def _device_key(name: str) -> tuple[str, int]:
    """('GPU', 0) for '/gpu:0', 'GPU:0' or '/job:localhost/replica:0/task:0/device:GPU:0'."""
    text = name if name.startswith("/") else f"/device:{name}"
    spec = tf.DeviceSpec.from_string(text)
    if not spec.device_type:
        raise ValueError(name)
    return spec.device_type.upper(), spec.device_index or 0


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )


def shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Workers split the batches, not files (the pipeline reads a list of paths, which file sharding
    cannot split)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def enable_multi_worker_fit(
    model: keras.Model, strategy: tf.distribute.Strategy, dataset: tf.data.Dataset
) -> None:
    """Let Keras 3's fit run under MultiWorkerMirroredStrategy (see the module docstring); a no-op
    otherwise."""
    if not is_multi_worker(strategy):
        return
    from keras.src.backend.tensorflow import trainer

    if not getattr(trainer.reduce_per_replica, "_cxr_multi_worker", False):
        original = trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):  # type: ignore[no-untyped-def]
            if is_multi_worker(strategy) and reduction in ("auto", "mean"):

                def mean(v):  # type: ignore[no-untyped-def]
                    if isinstance(v, tf.distribute.DistributedValues):
                        return strategy.reduce("MEAN", v, axis=None)
                    return v

                return tf.nest.map_structure(mean, values)
            return original(values, strategy, reduction)

        reduce_per_replica._cxr_multi_worker = True  # type: ignore[attr-defined]
        trainer.reduce_per_replica = reduce_per_replica
    symbolic = tf.nest.map_structure(
        lambda spec: keras.KerasTensor(spec.shape, spec.dtype.name), dataset.element_spec
    )
    with strategy.scope():
        model._symbolic_build(data_batch=symbolic)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
