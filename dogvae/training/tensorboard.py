"""TensorBoard logs of a training: losses, learning rate, KL per latent dimension, sample grids.

``TensorBoardLog`` takes the training's progress events (``dogvae.training.events``)
and writes them as TensorBoard's own scalar and image summaries, laid out as Keras'
TensorBoard callback lays them out (``train/`` and ``validation/`` beside each other,
tags ``epoch_loss``, ``batch_loss`` ...), so that ``tensorboard --logdir DIR`` shows
train and validation curves on one chart. The summaries go through ``tf.summary.write``
with the plugins' metadata: ``tf.summary.scalar``, ``tf.summary.image`` and Keras'
callback all need the ``tensorboard`` package, which dogvae does not depend on.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from dogvae.images import image_grid
from dogvae.training.events import Event, OnEvent

LOSSES = ("loss", "reconstruction", "kl")
EPOCH_SCALARS = ("learning_rate", "kl_weight", "active_units", "seconds")


def _metadata(plugin: str, data_class: int) -> summary_pb2.SummaryMetadata:
    """What TensorBoard's scalar or image plugin writes with a summary (plugin data version 0)."""
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin),
        data_class=data_class,
    )


SCALAR = _metadata("scalars", summary_pb2.DATA_CLASS_SCALAR)
IMAGE = _metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE)


def write_scalar(tag: str, value: float, step: int) -> None:
    """One scalar into the default writer, as ``tf.summary.scalar`` would write it."""
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=SCALAR)


def write_image(tag: str, image: np.ndarray, step: int) -> None:
    """One uint8 image (H, W, C) into the default writer, as ``tf.summary.image`` would."""
    height, width = image.shape[:2]
    png = tf.io.encode_png(image)
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height)), png])
    tf.summary.write(tag, tensor, step=step, metadata=IMAGE)


class TensorBoardLog(keras.callbacks.Callback):
    """Writes a training's events to TensorBoard, then passes them on to ``on_event``.

    Give the instance as the training's ``on_event`` and add it to the Keras
    callbacks, which close its files when the training ends. Per reported batch:
    ``batch_loss``, ``batch_reconstruction``, ``batch_kl`` (step: batches so far);
    per epoch (step: the epoch): ``epoch_loss`` and the other losses in ``train/``
    and ``validation/``, the learning rate, the KL weight, the active latent units,
    ``kl_per_dimension/NN`` for each latent dimension and the ``samples`` grid.

    Args:
        log_dir: The folder TensorBoard is pointed at (created when missing).
        on_event: Called with every event after it is written.
    """

    def __init__(self, log_dir: str | Path, on_event: OnEvent | None = None) -> None:
        super().__init__()
        log_dir = Path(log_dir)
        self.on_event = on_event or (lambda event: None)
        self.train = tf.summary.create_file_writer(str(log_dir / "train"))
        self.validation = tf.summary.create_file_writer(str(log_dir / "validation"))

    def __call__(self, event: Event) -> None:
        if event["type"] == "batch":
            self._batch(event)
        elif event["type"] == "epoch":
            self._epoch(event)
        self.on_event(event)

    def _batch(self, event: Event) -> None:
        step = (event["epoch"] - 1) * event["steps"] + event["batch"]
        with self.train.as_default():
            for key in LOSSES:
                write_scalar(f"batch_{key}", event[key], step)

    def _epoch(self, event: Event) -> None:
        step = event["epoch"]
        with self.train.as_default():
            for key in LOSSES:
                write_scalar(f"epoch_{key}", event[key], step)
            for key in EPOCH_SCALARS:
                write_scalar(f"epoch_{key}", event[key], step)
            kl_per_dim = event["kl_per_dim"]
            digits = len(str(len(kl_per_dim)))
            for dimension, value in enumerate(kl_per_dim, start=1):
                write_scalar(f"kl_per_dimension/{dimension:0{digits}d}", value, step)
            write_image("samples", image_grid(event["samples"]), step)
        self.train.flush()
        if all(math.isfinite(event.get(f"val_{key}", math.nan)) for key in LOSSES):
            with self.validation.as_default():
                for key in LOSSES:
                    write_scalar(f"epoch_{key}", event[f"val_{key}"], step)
            self.validation.flush()

    def on_train_end(self, logs=None):
        self.train.close()
        self.validation.close()
