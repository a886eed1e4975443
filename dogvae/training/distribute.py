"""tf.distribute: the strategies a training can run under, and which process saves."""

from __future__ import annotations

import json
import os
from typing import Any

from dogvae.config import STRATEGIES


def make_strategy(name: str = "default") -> Any:
    """A tf.distribute strategy by name.

    "default" trains on one device (the CPU, or the first GPU); "mirrored"
    replicates over every local GPU (the CPU when there is none); "multiworker"
    spans machines as described by the TF_CONFIG environment variable (create it
    before any other TensorFlow work, as TensorFlow requires).
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")


def is_chief() -> bool:
    """Whether this process saves the run: always, except on a multi-worker's other workers.

    TF_CONFIG names the chief either as task type "chief" or, in a cluster
    without one, as worker 0.
    """
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    if not task:
        return True
    if "chief" in (config.get("cluster") or {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0
