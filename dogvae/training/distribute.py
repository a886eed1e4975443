"""tf.distribute: the strategies a training can run under, and which process saves."""

from __future__ import annotations

import json
import os
from pathlib import Path
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


def is_distributed(strategy: Any) -> bool:
    """Whether ``strategy`` is a tf.distribute strategy other than the default one device.

    Keras treats a model built under such a strategy differently (it averages the
    first batch over the replicas to build the model), and so does the pipeline.
    """
    if strategy is None:
        return False
    import tensorflow as tf

    with strategy.scope():
        return tf.distribute.has_strategy()


def lost_worker_message(error: Exception, run_dir: str | Path | None = None) -> str:
    """What to tell a worker whose collective step failed: a peer is gone, resume them all.

    When a worker dies, TensorFlow aborts the others' collective steps (an
    UnavailableError, "Connection reset by peer") instead of waiting for it.
    """
    where = run_dir if run_dir is not None else "the chief's run folder"
    return (
        f"the training lost a worker of the cluster (its collective step failed with "
        f"{type(error).__name__}); what survives is the last checkpoint in {where}: start "
        "every worker again with `python -m dogvae train --resume RUN --strategy multiworker`, "
        "RUN being the chief's run folder"
    )
