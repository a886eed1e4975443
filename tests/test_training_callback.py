"""The Keras callback: progress events, the stop flag, the time budget, the NaN guard."""

import math
import threading

import numpy as np
import pytest

from dogvae.config import TrainConfig
from dogvae.training import learning_rate_at, train_vae
from dogvae.training.callback import latent_diagnostics
from tests.training_helpers import TINY, Poison, blobs


def test_stop_flag_ends_after_the_current_batch_and_keeps_the_weights():
    stop = threading.Event()
    seen = []

    def on_event(event):
        seen.append(event)
        if event["type"] == "batch" and event["batch"] == 2:
            stop.set()

    result = train_vae(
        blobs(64),
        None,
        TINY,
        TrainConfig(epochs=50, batch_size=8, report_every=1),
        on_event=on_event,
        stop_event=stop,
    )
    assert result.status == "stopped"
    batches = [event for event in seen if event["type"] == "batch"]
    assert batches[-1]["epoch"] == 1 and batches[-1]["batch"] <= 3
    assert len(result.history) == 1 and result.history[0]["batches"] <= 3
    assert "stopped" in result.message


def test_nan_loss_stops_training_and_rolls_back_to_the_last_good_epoch():
    # A learning rate this absurd overflows within a few epochs.
    images = blobs(32)
    result = train_vae(images, None, TINY, TrainConfig(epochs=40, batch_size=8, learning_rate=1.0))
    assert result.status == "diverged", result.history
    assert "last good epoch" in result.message
    weights = result.encoder.get_weights() + result.decoder.get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    assert all(math.isfinite(row["loss"]) for row in result.history)


def test_training_follows_the_cosine_schedule_and_records_the_rate():
    config = TrainConfig(epochs=4, batch_size=16, learning_rate=2e-3, lr_schedule="cosine")
    result = train_vae(blobs(64), None, TINY, config)
    rates = [row["learning_rate"] for row in result.history]
    # Recorded at each epoch's last batch: 4 batches an epoch, so batch 4 of 16 is 3/16 of the way.
    expected = [learning_rate_at(config, (4 * epoch + 3) / 16) for epoch in range(4)]
    assert rates == pytest.approx(expected, rel=1e-6)
    assert rates[-1] < rates[0] / 10
    constant = train_vae(blobs(64), None, TINY, TrainConfig(epochs=2, batch_size=16))
    assert [row["learning_rate"] for row in constant.history] == [1e-3, 1e-3]


def test_latent_diagnostics_counts_active_units():
    rng = np.random.default_rng(0)
    z_mean = np.stack([rng.normal(size=500), np.full(500, 0.001)], axis=1)
    z_log_var = np.stack([np.full(500, -2.0), np.zeros(500)], axis=1)
    diagnostics = latent_diagnostics(z_mean, z_log_var)
    assert diagnostics["active_units"] == 1
    assert diagnostics["kl_per_dim"][0] > 0.5 and diagnostics["kl_per_dim"][1] < 0.01


def test_nan_mid_training_rolls_back_to_exactly_the_last_good_epoch():
    poisoner = Poison(epoch=2)  # as the third epoch begins
    result = train_vae(
        blobs(32),
        blobs(8, seed=3),
        TINY,
        TrainConfig(epochs=5, batch_size=8),
        extra_callbacks=(poisoner,),
    )
    assert result.status == "diverged"
    assert "at epoch 3, batch" in result.message
    assert [row["epoch"] for row in result.history] == [1, 2]
    for restored, good in zip(result.decoder.get_weights(), poisoner.kept[1], strict=True):
        np.testing.assert_array_equal(restored, good)


def test_time_budget_ends_training_and_says_so():
    result = train_vae(
        blobs(64),
        None,
        TINY,
        TrainConfig(epochs=10_000, batch_size=8, budget_minutes=3 / 60),  # three seconds
    )
    assert result.status == "budget"
    assert "time budget" in result.message
    assert 2.5 < result.seconds < 30


def test_the_stop_flag_acts_within_a_batch_when_batches_are_rarely_reported():
    import keras

    stop = threading.Event()

    class StopAtSecondBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                stop.set()

    result = train_vae(
        blobs(64),
        None,
        TINY,
        TrainConfig(epochs=50, batch_size=8, report_every=1000),
        stop_event=stop,
        extra_callbacks=(StopAtSecondBatch(),),
    )
    assert result.status == "stopped"
    assert len(result.history) == 1 and result.history[0]["batches"] <= 3


def test_a_nan_between_reported_batches_still_rolls_back_to_the_last_good_epoch():
    poisoner = Poison(epoch=1, batch=1)  # mid-epoch, not a reported batch
    result = train_vae(
        blobs(64),
        None,
        TINY,
        TrainConfig(epochs=4, batch_size=8, report_every=1000),
        extra_callbacks=(poisoner,),
    )
    assert result.status == "diverged"
    assert "at epoch 2, batch 8" in result.message  # found on the epoch's last batch
    assert [row["epoch"] for row in result.history] == [1]
    for restored, good in zip(result.decoder.get_weights(), poisoner.kept[0], strict=True):
        np.testing.assert_array_equal(restored, good)
