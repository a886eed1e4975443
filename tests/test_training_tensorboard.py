"""TensorBoard logs: losses, learning rate, KL per latent dimension, sample grids, read back."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from dogvae.cli import main
from dogvae.config import TrainConfig
from dogvae.training import train_vae
from tests.training_helpers import TINY, blobs, interrupted_run


def read_events(folder: Path) -> dict[str, dict[int, object]]:
    """{tag: {step: value}} of every event file in ``folder``: floats for scalars, decoded
    uint8 arrays for images, each checked to carry its TensorBoard plugin's name."""
    found: dict[str, dict[int, object]] = defaultdict(dict)
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "images":
                    width, height = int(tensor[0]), int(tensor[1])
                    image = tf.io.decode_png(tensor[2]).numpy()
                    assert image.shape[:2] == (height, width)
                    found[value.tag][event.step] = image
                else:
                    assert plugin == "scalars", (value.tag, plugin)
                    found[value.tag][event.step] = float(tensor)
    return found


def test_a_training_writes_losses_rates_kl_per_dimension_and_samples(tmp_path):
    events = []
    result = train_vae(
        blobs(32),
        blobs(8, seed=1),
        TINY,
        TrainConfig(epochs=2, batch_size=16, report_every=1, lr_schedule="cosine"),
        on_event=events.append,
        tensorboard_dir=tmp_path / "tb",
    )
    assert result.status == "finished"
    assert [event["type"] for event in events].count("epoch") == 2, "events still reach the caller"

    train = read_events(tmp_path / "tb" / "train")
    for key in ("loss", "reconstruction", "kl"):
        assert sorted(train[f"batch_{key}"]) == [1, 2, 3, 4]  # 2 batches an epoch, 2 epochs
        assert sorted(train[f"epoch_{key}"]) == [1, 2]
    for epoch, row in enumerate(result.history, start=1):
        assert train["epoch_loss"][epoch] == pytest.approx(row["loss"])
        assert train["epoch_learning_rate"][epoch] == pytest.approx(row["learning_rate"])
        assert train["epoch_kl_weight"][epoch] == pytest.approx(row["kl_weight"])
        assert train["epoch_active_units"][epoch] == row["active_units"]
        for dimension, kl in enumerate(row["kl_per_dim"], start=1):
            assert train[f"kl_per_dimension/{dimension}"][epoch] == pytest.approx(kl, abs=1e-4)
    # The cosine schedule lowers the rate: the log follows the schedule, not the setting.
    assert train["epoch_learning_rate"][2] < train["epoch_learning_rate"][1]
    grid = train["samples"][2]
    assert grid.dtype == np.uint8 and grid.shape == (4 * 32 + 5 * 2, 4 * 32 + 5 * 2, 1)

    validation = read_events(tmp_path / "tb" / "validation")
    assert set(validation) == {"epoch_loss", "epoch_reconstruction", "epoch_kl"}
    assert validation["epoch_loss"][2] == pytest.approx(result.history[1]["val_loss"])


def test_a_worker_that_is_not_the_chief_writes_no_logs(tmp_path, monkeypatch):
    cluster = {"worker": ["a:1", "b:1"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    train_vae(
        blobs(16), None, TINY, TrainConfig(epochs=1, batch_size=8), tensorboard_dir=tmp_path / "tb"
    )
    assert not (tmp_path / "tb").exists()


def test_train_tensorboard_flag_writes_the_logs(tmp_path, image_folder, capsys):
    args = ["train", str(image_folder), "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert main([*args, "--batch-size", "4", "--tensorboard", str(tmp_path / "tb")]) == 0
    train = read_events(tmp_path / "tb" / "train")
    assert {"epoch_loss", "epoch_learning_rate", "samples", "kl_per_dimension/1"} <= set(train)
    assert (tmp_path / "run" / "config.json").is_file()


def test_train_tensorboard_refuses_a_file(tmp_path, image_folder, capsys):
    (tmp_path / "tb").write_text("not a folder")
    args = ["train", str(image_folder), "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert main([*args, "--tensorboard", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err
    assert "--tensorboard" in err and "is a file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("way", ["resume_and_save", "TrainingJob.resuming"])
def test_a_resumed_training_goes_on_writing_its_logs(tmp_path, monkeypatch, way):
    from dogvae.training import checkpoint as ckpt
    from dogvae.training.jobs import TrainingJob
    from dogvae.training.loop import resume_and_save

    logs = tmp_path / "tb"
    run, dataset = interrupted_run(tmp_path, monkeypatch, tensorboard_dir=logs)
    assert 2 not in read_events(logs / "train")["epoch_loss"]
    saved = ckpt.read_checkpoint(run)
    if way == "resume_and_save":
        resume_and_save(saved, dataset)
    else:
        job = TrainingJob.resuming(saved, dataset)
        assert job.tensorboard_dir == logs
        assert job.start().wait(120) and job.status == "finished"
    assert 2 in read_events(logs / "train")["epoch_loss"]  # the resumed epoch
