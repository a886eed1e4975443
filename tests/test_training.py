import itertools
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from dogvae.config import DataConfig, ModelConfig, TrainConfig
from dogvae.training import (
    TrainingJob,
    TrainingSlots,
    kl_weight_for_epoch,
    latent_diagnostics,
    learning_rate_at,
    train_vae,
)

TINY = ModelConfig(image_size=32, conv_filters=(8, 16), dense_units=16, latent_dim=2)


def blobs(n, size=32, seed=0):
    """Bright squares at random places: something a tiny VAE can learn in seconds."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 1), np.uint8)
    for image in images:
        y, x = rng.integers(0, size - 12, 2)
        image[y : y + 12, x : x + 12] = 255
    return images


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


def test_kl_warmup_schedule():
    config = TrainConfig(kl_weight=1.0, kl_warmup_epochs=4)
    assert [kl_weight_for_epoch(config, e) for e in range(6)] == [0, 0.25, 0.5, 0.75, 1, 1]
    assert kl_weight_for_epoch(TrainConfig(), 0) == 1.0


def test_cosine_schedule_falls_from_the_rate_to_one_percent():
    config = TrainConfig(learning_rate=1e-3, lr_schedule="cosine")
    rates = [learning_rate_at(config, p) for p in np.linspace(0, 1, 11)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-5)
    assert rates[5] == pytest.approx((1e-3 + 1e-5) / 2)
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert learning_rate_at(config, 3.0) == pytest.approx(1e-5)  # past the end: stays at the floor
    assert learning_rate_at(TrainConfig(learning_rate=2e-3), 0.9) == 2e-3  # constant
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")


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


def test_bad_images_are_refused_with_a_message():
    with pytest.raises(ValueError, match="expected"):
        train_vae(np.zeros((4, 16, 16, 1), np.uint8), None, TINY, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="uint8"):
        train_vae(np.zeros((4, 32, 32, 1), np.float32), None, TINY, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="empty"):
        train_vae(np.zeros((0, 32, 32, 1), np.uint8), None, TINY, TrainConfig(epochs=1))


def test_training_slots_cap_concurrent_trainings():
    slots = TrainingSlots(1)
    slots.acquire()
    with pytest.raises(RuntimeError, match="already running"):
        slots.acquire()
    slots.release()
    slots.acquire()
    assert slots.running == 1


def _dataset(images):
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


def test_training_job_runs_in_a_thread_saves_and_can_be_stopped(tmp_path):
    from dogvae.runs import read_run_info

    data_config = DataConfig(image_size=32)
    job = TrainingJob(
        dataset=_dataset(blobs(40)),
        model_config=TINY,
        train_config=TrainConfig(epochs=1000, batch_size=8, report_every=1),
        data_config=data_config,
        out_dir=tmp_path / "run",
    ).start()
    assert job.running and job.status == "running"
    for _ in range(600):
        if job.last_batch() is not None:
            break
        job.wait(0.1)
    job.stop()
    assert job.wait(60), "the job did not end within a minute of Stop"
    assert job.status == "stopped", job.message
    assert job.run_dir == tmp_path / "run"
    info = read_run_info(job.run_dir)
    assert info.config["status"] == "stopped"
    progress = job.progress()
    assert progress["epoch"] >= 1 and 0 < progress["fraction"] < 1


def test_training_job_reports_failure_instead_of_raising(tmp_path):
    (tmp_path / "taken").write_text("a file, not a run folder")
    slots = TrainingSlots(1)
    job = TrainingJob(
        dataset=_dataset(blobs(12)),
        model_config=TINY,
        train_config=TrainConfig(epochs=1, batch_size=4),
        data_config=DataConfig(image_size=32),
        out_dir=tmp_path / "taken",
        slots=slots,
    ).start()
    job.wait(60)
    assert job.status == "failed" and "not a folder" in job.message
    assert slots.running == 0  # the slot is given back


def poison(model) -> None:
    """NaN into the model's first weight: the next loss is NaN."""
    weights = model.get_weights()
    weights[0] = np.full_like(weights[0], np.nan)
    model.set_weights(weights)


def test_nan_mid_training_rolls_back_to_exactly_the_last_good_epoch():
    import keras

    kept = {}

    class PoisonThirdEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kept[epoch] = [w.copy() for w in self.model.decoder.get_weights()]

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                poison(self.model.decoder)

    result = train_vae(
        blobs(32),
        blobs(8, seed=3),
        TINY,
        TrainConfig(epochs=5, batch_size=8),
        extra_callbacks=(PoisonThirdEpoch(),),
    )
    assert result.status == "diverged"
    assert "at epoch 3, batch" in result.message
    assert [row["epoch"] for row in result.history] == [1, 2]
    for restored, good in zip(result.decoder.get_weights(), kept[1], strict=True):
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


def test_an_abandoned_job_stops_itself_and_still_saves(tmp_path):
    """A closed browser tab: the session check turns False, the job stops within seconds."""
    wanted = threading.Event()
    wanted.set()
    job = TrainingJob(
        dataset=_dataset(blobs(40)),
        model_config=TINY,
        train_config=TrainConfig(epochs=1000, batch_size=8),
        data_config=DataConfig(image_size=32),
        out_dir=tmp_path / "run",
        is_wanted=wanted.is_set,
        abandon_after=0.5,
    ).start()
    while job.last_batch() is None:
        job.wait(0.1)
    assert job.running
    wanted.clear()  # the tab closes
    assert job.wait(60), "the abandoned job kept training"
    assert job.status == "stopped" and job.abandoned
    assert "browser session closed" in job.message
    assert (tmp_path / "run" / "config.json").is_file()
    assert not any(t.name.startswith("dogvae-training") for t in threading.enumerate())


def _shutdown_job(out_dir):
    return TrainingJob(
        dataset=_dataset(blobs(40)),
        model_config=TINY,
        train_config=TrainConfig(epochs=10_000, batch_size=8),
        data_config=DataConfig(image_size=32),
        out_dir=out_dir,
    )


def test_a_server_shutting_down_stops_its_trainings_and_saves_them(tmp_path):
    from dogvae.training import save_running_jobs

    job = _shutdown_job(tmp_path / "run").start()
    while job.last_batch() is None:
        job.wait(0.1)
    assert job in save_running_jobs(timeout=60)
    assert not job.running and job.status == "stopped" and job.shut_down
    assert "server shut down" in job.message
    assert (tmp_path / "run" / "config.json").is_file()
    assert job not in save_running_jobs(timeout=1)  # stops only what still runs


# A process whose main thread ends while a training runs in its (daemon) thread, as
# Streamlit's does after Ctrl-C or SIGTERM.
EXIT_SCRIPT = """
import sys
from pathlib import Path
from tests.test_training import _shutdown_job
job = _shutdown_job(Path(sys.argv[1])).start()
while job.last_batch() is None:
    job.wait(0.1)
print("TRAINING", flush=True)
"""


def test_a_process_that_exits_mid_training_saves_the_run_first(tmp_path):
    import json

    from tests.conftest import start_python

    process = start_python("-c", EXIT_SCRIPT, tmp_path / "run")
    try:
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()  # a no-op once it has exited
    assert process.returncode == 0 and "TRAINING" in out, err[-2000:]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["status"] == "stopped" and saved["epochs_completed"] < 10_000


def memory_mapped(images, tmp_path):
    np.save(tmp_path / "images.npy", images)
    return np.asarray(np.load(tmp_path / "images.npy", mmap_mode="r"))


def epoch_batches(dataset):
    return [batch.numpy() for batch in dataset]


def test_a_memory_mapped_set_streams_the_same_batches_as_a_tensor(tmp_path):
    import tensorflow as tf

    from dogvae.training import _batches

    images = blobs(50)
    mapped = memory_mapped(images, tmp_path)
    rows = np.arange(3, 50, 2)
    tf.random.set_seed(0)
    streamed = epoch_batches(_batches(tf, mapped, 8, True, 7, rows))
    tf.random.set_seed(0)
    in_memory = epoch_batches(_batches(tf, images[rows], 8, True, 7))
    assert [len(batch) for batch in streamed] == [8, 8, 8]
    for first, second in zip(streamed, in_memory, strict=True):
        np.testing.assert_array_equal(first, second)
    # Every row once per epoch, in a shuffled order.
    seen = np.concatenate(streamed)
    assert sorted(map(bytes, seen)) == sorted(map(bytes, images[rows]))
    assert not np.array_equal(seen, images[rows])


@pytest.mark.parametrize("memory", ["tensor", "mapped"])
def test_flips_mirror_about_half_the_images_afresh_every_epoch(tmp_path, memory):
    import tensorflow as tf

    from dogvae.training import _batches

    images = blobs(64)
    images = images[[not np.array_equal(image, image[:, ::-1]) for image in images]][:48]
    source = memory_mapped(images, tmp_path) if memory == "mapped" else images
    assert len(images) == 48  # squares off the centre line: none is its own mirror
    dataset = _batches(tf, source, 16, False, 3, flip=True)
    flipped_per_epoch = []
    for _ in range(3):
        batch = np.concatenate(epoch_batches(dataset))
        same = [np.array_equal(batch[i], images[i]) for i in range(48)]
        mirrored = [np.array_equal(batch[i], images[i][:, ::-1]) for i in range(48)]
        assert all(a != b for a, b in zip(same, mirrored, strict=True))  # one or the other
        flipped_per_epoch.append(tuple(mirrored))
    assert all(12 <= sum(flips) <= 36 for flips in flipped_per_epoch)
    assert len(set(flipped_per_epoch)) == 3  # a new draw every epoch
    unflipped = np.concatenate(epoch_batches(_batches(tf, source, 16, False, 3)))
    np.testing.assert_array_equal(unflipped, images)  # and none without flip


@pytest.mark.parametrize("memory", ["tensor", "mapped"])
def test_shifts_move_each_image_by_its_own_offset_afresh_every_epoch(tmp_path, memory):
    import tensorflow as tf

    from dogvae.training import _batches

    # One bright 6x4 block per image, away from the edges so that no offset cuts it.
    images = np.zeros((24, 32, 32, 1), np.uint8)
    for i in range(24):
        images[i, 10:16, 12:16] = 100 + i
    source = memory_mapped(images, tmp_path) if memory == "mapped" else images
    dataset = _batches(tf, source, 8, False, 5, shift=3)
    offsets_per_epoch = []
    for _ in range(3):
        batch = np.concatenate(epoch_batches(dataset))
        offsets = []
        for i, image in enumerate(batch):
            rows, columns = np.nonzero(image[..., 0])
            assert len(rows) == 24 and set(image[rows, columns, 0]) == {100 + i}  # moved whole
            assert rows.max() - rows.min() == 5 and columns.max() - columns.min() == 3
            offsets.append((int(rows.min()) - 10, int(columns.min()) - 12))
        assert all(-3 <= dy <= 3 and -3 <= dx <= 3 for dy, dx in offsets)
        assert len(set(offsets)) > 8  # each image its own offset
        offsets_per_epoch.append(tuple(offsets))
    assert len(set(offsets_per_epoch)) == 3  # a new draw every epoch
    # The edge is mirrored into the gap: a block at the border stays at the border.
    edge = np.zeros((8, 32, 32, 1), np.uint8)
    edge[:, :, :4] = 255  # a bar 4 wide: however it moves, its mirror fills column 0
    moved = np.concatenate(epoch_batches(_batches(tf, edge, 8, False, 5, shift=3)))
    assert (moved[:, :, 0] == 255).all() and (moved[:, :, 8:] == 0).all()
    unmoved = np.concatenate(epoch_batches(_batches(tf, source, 8, False, 5)))
    np.testing.assert_array_equal(unmoved, images)  # and none without shift


def test_shift_is_refused_beyond_its_bounds():
    assert TrainConfig(shift=8).shift == 8
    for wrong in (-1, 9, 2.5, "2", True):
        with pytest.raises(ValueError, match="shift must be from 0 to 8 pixels"):
            TrainConfig(shift=wrong)


def test_training_with_flips_runs_and_records_the_setting(tmp_path):
    result = train_vae(blobs(32), None, TINY, TrainConfig(epochs=1, batch_size=8, flip=True))
    assert result.status == "finished" and len(result.history) == 1
    with pytest.raises(ValueError, match="flip must be"):
        TrainConfig(flip="yes")


def test_streaming_hands_mapped_pages_back_after_every_batch():
    from dogvae import training

    class Mapping:
        released = 0

        def madvise(self, advice):
            Mapping.released += 1

    gather = training._Gather(blobs(10), Mapping())
    for start in range(0, 10, 2):
        np.testing.assert_array_equal(gather(np.arange(start, start + 2)), blobs(10)[start:][:2])
    assert Mapping.released == 5
    # An in-memory array has nothing to hand back.
    np.testing.assert_array_equal(training._Gather(blobs(4), None)(np.arange(2)), blobs(4)[:2])


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
    import keras

    kept = {}

    class PoisonSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kept[epoch] = [w.copy() for w in self.model.decoder.get_weights()]

        def on_train_batch_end(self, batch, logs=None):
            if len(kept) == 1 and batch == 1:  # mid-epoch, not a reported batch
                poison(self.model.decoder)

    result = train_vae(
        blobs(64),
        None,
        TINY,
        TrainConfig(epochs=4, batch_size=8, report_every=1000),
        extra_callbacks=(PoisonSecondEpoch(),),
    )
    assert result.status == "diverged"
    assert "at epoch 2, batch 8" in result.message  # found on the epoch's last batch
    assert [row["epoch"] for row in result.history] == [1]
    for restored, good in zip(result.decoder.get_weights(), kept[0], strict=True):
        np.testing.assert_array_equal(restored, good)


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's VmRSS")
def test_shuffled_reads_of_a_mapped_set_keep_resident_memory_bounded(tmp_path):
    from dogvae import training

    # 64 MB of 4 KB rows, read in shuffled batches: with fault-around, a sixteenth
    # of them maps every page, unless the gatherer hands pages back.
    path = tmp_path / "images.npy"
    rows = 16_384
    array = np.lib.format.open_memmap(path, "w+", np.uint8, (rows, 64, 64, 1))
    array[:] = 7
    array.flush()
    del array
    order = np.random.default_rng(0).permutation(rows)

    def read_all(gather) -> float:
        start, peak = resident_mb(), 0.0
        for first in range(0, rows, 64):
            gather(order[first : first + 64])
            peak = max(peak, resident_mb() - start)
        return peak

    released = np.load(path, mmap_mode="r")
    growth = read_all(training._Gather(released, training._mapping_of(released)))
    kept = np.load(path, mmap_mode="r")
    unreleased = read_all(training._Gather(kept, None))
    assert unreleased > 32  # the test does provoke the growth...
    assert growth < 16  # ...and the gatherer keeps it to about one batch's pages
