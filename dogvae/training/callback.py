"""LiveHistory, the Keras callback of every training, and the posterior-collapse signal.

The callback reports progress to a plain function (see ``dogvae.training.events``),
follows the KL and learning-rate schedules, ends the training on a stop flag or
the time budget, and guards against NaN: it keeps the weights of the last good
epoch so that a diverged training can be rolled back to them.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import keras
import numpy as np

from dogvae.config import TrainConfig
from dogvae.images import to_uint8
from dogvae.model import decode, encode
from dogvae.training.events import Event, OnEvent
from dogvae.training.schedules import kl_weight_for_epoch, learning_rate_at

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al.: a unit is active when Var_x(E[z|x]) > 0.01
MAX_DIAGNOSTIC_IMAGES = 1_000  # images encoded per epoch for the collapse signal
METRICS = ("loss", "reconstruction", "kl", "val_loss", "val_reconstruction", "val_kl")


def latent_diagnostics(z_mean: np.ndarray, z_log_var: np.ndarray) -> dict[str, Any]:
    """Posterior-collapse signal: mean KL per latent dimension and the number of active units."""
    kl_per_dim = np.mean(-0.5 * (1 + z_log_var - np.square(z_mean) - np.exp(z_log_var)), axis=0)
    variance = np.var(z_mean, axis=0) if len(z_mean) > 1 else np.zeros(z_mean.shape[1])
    return {
        "kl_per_dim": [round(float(value), 4) for value in kl_per_dim],
        "active_units": int(np.sum(variance > ACTIVE_UNIT_THRESHOLD)),
    }


class LiveHistory(keras.callbacks.Callback):
    """Reports progress to a plain function, honours a stop flag, guards against NaN.

    Sends a batch event every ``report_every`` batches and an epoch event after
    each good epoch (see ``dogvae.training.events``). Afterwards ``history`` holds
    the good epochs' rows, ``status`` is "finished", "stopped", "budget" or
    "diverged", and ``message`` says why it ended (empty when it finished).

    Args:
        on_event: Called with each event, from the training thread.
        stop_event: When set, training ends after the current batch.
        config: The run's schedules, budget and ``report_every``.
        steps: Batches an epoch.
        sample_z: Latent vectors decoded into each epoch's sample grid.
        diagnostic_images: Images encoded after each epoch for ``latent_diagnostics``.
    """

    def __init__(
        self,
        *,
        on_event: OnEvent,
        stop_event: threading.Event | None,
        config: TrainConfig,
        steps: int,
        sample_z: np.ndarray,
        diagnostic_images: np.ndarray,
    ) -> None:
        super().__init__()
        self.on_event = on_event
        self.stop_event = stop_event
        self.config = config
        self.steps = steps
        self.sample_z = sample_z
        self.diagnostic_images = diagnostic_images
        self.history: list[Event] = []
        self.status = "finished"
        self.message = ""
        self.good_weights: tuple[list, list] | None = None
        self.started = time.perf_counter()
        self.learning_rate = float(config.learning_rate)

    def _snapshot(self) -> None:
        self.good_weights = (
            self.model.encoder.get_weights(),
            self.model.decoder.get_weights(),
        )

    def roll_back(self) -> None:
        """Give the models back the weights of the last good epoch (or of the start)."""
        if self.good_weights is not None:
            self.model.encoder.set_weights(self.good_weights[0])
            self.model.decoder.set_weights(self.good_weights[1])

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()
        self._snapshot()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_started = time.perf_counter()
        self.batches = 0
        self.model.kl_weight.assign(kl_weight_for_epoch(self.config, epoch))

    def progress(self) -> float:
        """How far through the run: by batches, or by the time budget when that ends first."""
        done = (self.epoch * self.steps + self.batches) / (self.config.epochs * self.steps)
        budget = self.config.budget_minutes
        if budget is not None:
            done = max(done, (time.perf_counter() - self.started) / (budget * 60))
        return done

    def on_train_batch_begin(self, batch, logs=None):
        if self.config.lr_schedule != "constant":
            self.learning_rate = learning_rate_at(self.config, self.progress())
            self.model.optimizer.learning_rate.assign(self.learning_rate)

    def on_train_batch_end(self, batch, logs=None):
        self.batches = batch + 1
        # The loss is looked at when reported (and on an epoch's last batch, and at
        # the epoch's end): a NaN found a few batches late still rolls back to the
        # last good epoch, and the other batches cost two comparisons.
        report = self.batches % self.config.report_every == 0 or self.batches == self.steps
        if report:
            values = {key: float(logs[key]) for key in ("loss", "reconstruction", "kl")}
            if not all(math.isfinite(value) for value in values.values()):
                self.status = "diverged"
                self.message = (
                    f"the loss became {values['loss']} at epoch {self.epoch + 1}, batch "
                    f"{batch + 1}; kept the weights of the last good epoch "
                    f"({len(self.history)}). Try a lower learning rate or a KL warm-up."
                )
                self.model.stop_training = True
                return
        budget = self.config.budget_minutes
        if budget is not None and time.perf_counter() - self.started > budget * 60:
            self.status = "budget"
            self.message = (
                f"reached the time budget of {budget:g} minutes at epoch {self.epoch + 1}, "
                f"batch {batch + 1}; saved what was learned."
            )
            self.model.stop_training = True
        elif self.stop_event is not None and self.stop_event.is_set():
            self.status = "stopped"
            self.message = (
                f"stopped by the user at epoch {self.epoch + 1}, batch {batch + 1}; "
                "saved what was learned so far."
            )
            self.model.stop_training = True
        if report:
            self.on_event(
                {
                    "type": "batch",
                    "epoch": self.epoch + 1,
                    "batch": self.batches,
                    "steps": self.steps,
                    "elapsed": time.perf_counter() - self.started,
                    **values,
                }
            )

    def on_epoch_end(self, epoch, logs=None):
        if self.status == "diverged":
            return
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "batches": self.batches,
            **{key: float(logs.get(key, math.nan)) for key in METRICS},
            "seconds": round(time.perf_counter() - self.epoch_started, 3),
            "kl_weight": float(kl_weight_for_epoch(self.config, epoch)),
            "learning_rate": self.learning_rate,  # at the epoch's last batch
        }
        broken = [key for key in METRICS if key in logs and not math.isfinite(row[key])]
        if broken:
            self.status = "diverged"
            if all(key.startswith("val_") for key in broken):
                where = f"the validation loss became {row.get('val_loss')} at epoch {epoch + 1}"
            else:  # between two reported batches
                where = (
                    f"the loss became {row['loss']} at epoch {epoch + 1}, "
                    f"batch {self.batches} or before"
                )
            self.message = (
                f"{where}; kept the weights of the last good epoch. Try a lower learning rate."
            )
            self.model.stop_training = True
            return
        z_mean, z_log_var = encode(self.model.encoder, self.diagnostic_images)
        row.update(latent_diagnostics(z_mean, z_log_var))
        self._snapshot()
        self.history.append(row)
        samples = to_uint8(decode(self.model.decoder, self.sample_z))
        self.on_event({"type": "epoch", "epochs": self.config.epochs, **row, "samples": samples})
