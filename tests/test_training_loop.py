"""The training loop: train_vae learns, refuses bad images, trains on indices of a memory map."""

import math

import numpy as np
import pytest

from dogvae.config import TrainConfig
from dogvae.training import train_vae
from tests.training_helpers import TINY, blobs, memory_mapped


def test_training_reports_batches_and_epochs_and_learns():
    events = []
    result = train_vae(
        blobs(64),
        blobs(16, seed=1),
        TINY,
        TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3, report_every=1),
        on_event=events.append,
    )
    assert result.status == "finished"
    epochs = [event for event in events if event["type"] == "epoch"]
    batches = [event for event in events if event["type"] == "batch"]
    assert [event["epoch"] for event in epochs] == [1, 2, 3]
    assert len(batches) == 3 * 4  # 64 images / batch 16, reported every batch
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    for row in result.history:
        for key in ("loss", "reconstruction", "kl", "val_loss", "val_reconstruction", "val_kl"):
            assert math.isfinite(row[key])
        assert row["loss"] == pytest.approx(row["reconstruction"] + row["kl"], rel=1e-4)
        assert len(row["kl_per_dim"]) == 2 and 0 <= row["active_units"] <= 2
    assert epochs[0]["samples"].shape == (16, 32, 32, 1) and epochs[0]["samples"].dtype == np.uint8


def test_bad_images_are_refused_with_a_message():
    with pytest.raises(ValueError, match="expected"):
        train_vae(np.zeros((4, 16, 16, 1), np.uint8), None, TINY, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="uint8"):
        train_vae(np.zeros((4, 32, 32, 1), np.float32), None, TINY, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="empty"):
        train_vae(np.zeros((0, 32, 32, 1), np.uint8), None, TINY, TrainConfig(epochs=1))


def test_training_with_flips_runs_and_records_the_setting(tmp_path):
    result = train_vae(blobs(32), None, TINY, TrainConfig(epochs=1, batch_size=8, flip=True))
    assert result.status == "finished" and len(result.history) == 1
    with pytest.raises(ValueError, match="flip must be"):
        TrainConfig(flip="yes")


def test_training_on_indices_of_a_memory_mapped_set_matches_training_on_copies(tmp_path):
    images = np.concatenate([blobs(40), blobs(12, seed=5)])
    train_rows, validation_rows = np.arange(0, 52, 4), np.arange(2, 52, 4)
    config = TrainConfig(epochs=2, batch_size=8, learning_rate=3e-3)
    copies = train_vae(images[train_rows], images[validation_rows], TINY, config)
    mapped = memory_mapped(images, tmp_path)
    streamed = train_vae(
        mapped,
        mapped,
        TINY,
        config,
        train_indices=train_rows,
        validation_indices=validation_rows,
    )
    for first, second in zip(copies.history, streamed.history, strict=True):
        for key in ("loss", "val_loss", "kl"):
            assert first[key] == pytest.approx(second[key], rel=1e-5)
