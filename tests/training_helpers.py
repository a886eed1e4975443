"""What the training tests share: a tiny model, images it learns fast, a callback that
poisons the decoder, and a job that trains until stopped."""

from __future__ import annotations

import keras
import numpy as np

from dogvae.config import DataConfig, ModelConfig, TrainConfig
from tests.conftest import make_dataset

TINY = ModelConfig(image_size=32, conv_filters=(8, 16), dense_units=16, latent_dim=2)


def blobs(n, size=32, seed=0):
    """Bright squares at random places: something a tiny VAE can learn in seconds."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 1), np.uint8)
    for image in images:
        y, x = rng.integers(0, size - 12, 2)
        image[y : y + 12, x : x + 12] = 255
    return images


class Poison(keras.callbacks.Callback):
    """Puts NaN into the first weight of the decoder (or of each of ``models``), so that
    the next loss is NaN.

    It does so when 0-based ``epoch`` begins or, given ``batch``, after that
    batch of that epoch; ``kept[e][name]`` holds a copy of each model's weights at
    the end of every epoch e, to compare a rolled-back model with.
    """

    def __init__(self, epoch: int, batch: int | None = None, models=("decoder",)):
        super().__init__()
        self.epoch, self.batch, self.models = epoch, batch, tuple(models)
        self.current = -1
        self.kept: dict[int, dict[str, list[np.ndarray]]] = {}

    def _poison(self) -> None:
        for name in self.models:
            model = getattr(self.model, name)
            weights = model.get_weights()
            weights[0] = np.full_like(weights[0], np.nan)
            model.set_weights(weights)

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch
        if epoch == self.epoch and self.batch is None:
            self._poison()

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            self._poison()

    def on_epoch_end(self, epoch, logs=None):
        self.kept[epoch] = {
            name: [w.copy() for w in getattr(self.model, name).get_weights()]
            for name in ("encoder", "decoder")
        }


def shutdown_job(out_dir):
    """A job that trains for 10,000 epochs: it ends only when it is stopped."""
    from dogvae.training import TrainingJob

    return TrainingJob(
        dataset=make_dataset(blobs(40), validation=4),
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


def interrupted_run(folder, monkeypatch, name="run", **options):
    """``folder/name`` as a kill right after its first epoch's checkpoint leaves it (a
    2-epoch TINY training through train_and_save, ``options`` passed on), and the
    in-memory Dataset it used."""
    import pytest

    from dogvae.training.checkpointer import Checkpointer
    from dogvae.training.loop import train_and_save

    write = Checkpointer.write

    def write_then_die(self, epoch, batch):
        write(self, epoch, batch)
        if batch == 0:
            raise KeyboardInterrupt("killed")

    dataset = make_dataset(blobs(20), validation=4)
    run = folder / name
    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "write", write_then_die)
        with pytest.raises(KeyboardInterrupt):
            train_and_save(
                dataset,
                TINY,
                TrainConfig(epochs=2, batch_size=8),
                DataConfig(image_size=32),
                run,
                preset="custom",
                source={"path": str(folder / "images"), "data_root": None},
                **options,
            )
    return run, dataset
