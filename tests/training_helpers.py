"""What the training tests share: a tiny model, images it learns fast, an in-memory
dataset, a callback that poisons the decoder, and a job that trains until stopped."""

from __future__ import annotations

import keras
import numpy as np

from dogvae.config import DataConfig, ModelConfig, TrainConfig

TINY = ModelConfig(image_size=32, conv_filters=(8, 16), dense_units=16, latent_dim=2)


def blobs(n, size=32, seed=0):
    """Bright squares at random places: something a tiny VAE can learn in seconds."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 1), np.uint8)
    for image in images:
        y, x = rng.integers(0, size - 12, 2)
        image[y : y + 12, x : x + 12] = 255
    return images


def in_memory_dataset(images):
    """A Dataset of ``images`` as load_dataset makes it, the last 4 for validation."""
    import pandas as pd

    from dogvae.data import Dataset, DatasetReport

    n = len(images)
    table = pd.DataFrame(
        {
            "filepaths": [f"{i}.png" for i in range(n)],
            "split": ["train"] * (n - 4) + ["validation"] * 4,
        }
    )
    report = DatasetReport(
        source="memory",
        kind="folder",
        rows=n,
        found=n,
        readable=n,
        unreadable=(),
        train=n - 4,
        validation=4,
        split="test",
        image_size=images.shape[1],
        channels=images.shape[3],
    )
    return Dataset(images=images, table=table, report=report)


class Poison(keras.callbacks.Callback):
    """Puts NaN into the decoder's first weight, so that the next loss is NaN.

    It does so when 0-based ``epoch`` begins or, given ``batch``, after that
    batch of that epoch; ``kept`` holds a copy of the decoder's weights at the
    end of every epoch, to compare a rolled-back decoder with.
    """

    def __init__(self, epoch: int, batch: int | None = None):
        super().__init__()
        self.epoch, self.batch = epoch, batch
        self.current = -1
        self.kept: dict[int, list[np.ndarray]] = {}

    def _poison(self) -> None:
        weights = self.model.decoder.get_weights()
        weights[0] = np.full_like(weights[0], np.nan)
        self.model.decoder.set_weights(weights)

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch
        if epoch == self.epoch and self.batch is None:
            self._poison()

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            self._poison()

    def on_epoch_end(self, epoch, logs=None):
        self.kept[epoch] = [w.copy() for w in self.model.decoder.get_weights()]


def shutdown_job(out_dir):
    """A job that trains for 10,000 epochs: it ends only when it is stopped."""
    from dogvae.training import TrainingJob

    return TrainingJob(
        dataset=in_memory_dataset(blobs(40)),
        model_config=TINY,
        train_config=TrainConfig(epochs=10_000, batch_size=8),
        data_config=DataConfig(image_size=32),
        out_dir=out_dir,
    )


def memory_mapped(images, tmp_path):
    np.save(tmp_path / "images.npy", images)
    return np.asarray(np.load(tmp_path / "images.npy", mmap_mode="r"))


def epoch_batches(dataset):
    return [batch.numpy() for batch in dataset]
