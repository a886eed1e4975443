"""Checkpointer, the Keras callback that writes a training's checkpoints and restores one.

It runs after ``LiveHistory`` (whose epoch, batch, clock and history it records) and
writes ``RUN/checkpoint.npz`` at the end of every good epoch and, within an epoch,
once ``interval`` seconds have passed since the last write. The file's format is
``dogvae.training.checkpoint``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from dogvae.training.callback import LiveHistory
from dogvae.training.checkpoint import Checkpoint, write_checkpoint


def seed_generators(vae: Any) -> list:
    """The SeedGenerators of the VAE's layers (the sampling layer's), in a fixed order."""
    return [
        layer.seed_generator
        for model in vae.parts
        for layer in model.layers
        if isinstance(getattr(layer, "seed_generator", None), keras.random.SeedGenerator)
    ]


def capture(vae: Any, *, metrics: bool = True) -> dict[str, list[np.ndarray]]:
    """Copies of everything in the model that a resumed training must find as it was.

    ``metrics=False`` leaves out the epoch's running losses, which an epoch's end
    does not need (Keras resets them as the next epoch begins).
    """
    return {
        "encoder": vae.encoder.get_weights(),
        "decoder": vae.decoder.get_weights(),
        # A logistic likelihood's own head (the layers it shares are the decoder's).
        "decoder_scale": vae.scale_decoder.get_weights() if vae.scale_decoder is not None else [],
        "optimizer": [np.array(variable.numpy()) for variable in vae.optimizer.variables],
        "seeds": [np.array(generator.state.numpy()) for generator in seed_generators(vae)],
        "metrics": [
            np.array(variable.numpy()) for metric in vae.metrics for variable in metric.variables
        ]
        if metrics
        else [],
    }


def restore(vae: Any, checkpoint: Checkpoint) -> None:
    """Put a checkpoint's weights, optimizer state and random state into a compiled VAE.

    The epoch's running losses are not set here: Keras resets them as each epoch
    begins, so ``Checkpointer`` sets them then.
    """
    arrays = checkpoint.arrays
    vae.encoder.set_weights(arrays["encoder"])
    vae.decoder.set_weights(arrays["decoder"])
    if vae.scale_decoder is not None:
        vae.scale_decoder.set_weights(arrays["decoder_scale"])
    if not vae.optimizer.built:
        vae.optimizer.build(vae.trainable_variables)
    _assign(vae.optimizer.variables, arrays["optimizer"], "optimizer")
    _assign([generator.state for generator in seed_generators(vae)], arrays["seeds"], "seeds")


def _assign(variables: list, values: list[np.ndarray], what: str) -> None:
    if len(variables) != len(values):
        raise ValueError(
            f"the checkpoint's {what} state has {len(values)} parts, the model {len(variables)}; "
            "it was written by another version of dogvae"
        )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


class Checkpointer(keras.callbacks.Callback):
    """Writes checkpoints of a training; on a resumed one, restores the epoch's losses.

    Args:
        run_dir: The run folder the checkpoint goes into.
        settings: The run's settings, stored with each checkpoint (see ``Checkpoint``).
        live: The training's LiveHistory, run before this callback.
        interval: Seconds between two checkpoints within an epoch.
        resume: The checkpoint the training continues from, or None.
        mid_epoch: Whether to write within an epoch too. Not under a multi-worker
            strategy: reading the running losses there is a collective operation,
            which the chief alone would start and the other workers never join.
    """

    def __init__(
        self,
        *,
        run_dir: str | Path,
        settings: dict[str, Any],
        live: LiveHistory,
        interval: float,
        resume: Checkpoint | None = None,
        mid_epoch: bool = True,
    ) -> None:
        super().__init__()
        self.mid_epoch = mid_epoch
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.live = live
        self.interval = interval
        self.pending_metrics = None
        if resume is not None and resume.batch:
            self.pending_metrics = (resume.epoch, resume.arrays["metrics"])
        self.samples = None if resume is None else resume.samples
        self.last_write = time.monotonic()
        self.written = 0

    def on_epoch_begin(self, epoch, logs=None):
        if self.pending_metrics is not None and self.pending_metrics[0] == epoch:
            variables = [variable for metric in self.model.metrics for variable in metric.variables]
            _assign(variables, self.pending_metrics[1], "metrics")
        self.pending_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        # After an epoch's last batch, the epoch's own checkpoint follows.
        if (
            not self.mid_epoch
            or time.monotonic() - self.last_write < self.interval
            or self.live.batches >= self.live.steps
        ):
            return
        loss = float((logs or {}).get("loss", math.nan))
        if self.live.status == "finished" and not self.model.stop_training and math.isfinite(loss):
            self.write(self.live.epoch, self.live.batches)

    def on_epoch_end(self, epoch, logs=None):
        # A stopped, budget or diverged training is saved as a run right away.
        if self.live.status == "finished" and self.live.history:
            self.samples = self.live.last_samples
            self.write(epoch + 1, 0)

    def write(self, epoch: int, batch: int) -> None:
        """Write a checkpoint at ``batch`` batches into 0-based ``epoch`` (0: its start)."""
        live = self.live
        state = {
            "epoch": epoch,
            "batch": batch,
            "seconds": time.perf_counter() - live.started,
            "epoch_seconds": time.perf_counter() - live.epoch_started if batch else 0.0,
            "learning_rate": live.learning_rate,
            "history": live.history,
            "settings": self.settings,
        }
        arrays = capture(self.model, metrics=batch > 0)
        write_checkpoint(self.run_dir, Checkpoint(state, arrays, self.samples))
        self.last_write = time.monotonic()
        self.written += 1
