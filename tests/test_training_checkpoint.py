"""Checkpoints and resume: the file, its atomic write, and a resume that matches bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from dogvae.cli import main
from dogvae.config import TrainConfig
from dogvae.training import checkpoint as ckpt
from dogvae.training.loop import _segments, resume_and_save, train_vae
from tests.conftest import REPO, make_dataset
from tests.training_helpers import TINY, blobs, interrupted_run

# Flips, shifts, a cosine rate and a KL warm-up: every position a resume must restore.
CONFIG = TrainConfig(
    epochs=3, batch_size=8, seed=3, flip=True, shift=2, lr_schedule="cosine", kl_warmup_epochs=2
)


class Kill(keras.callbacks.Callback):
    """Ends the training like a kill -9 after batch ``batch`` (0-based) of ``epoch``:
    nothing after that point runs, so no checkpoint of that batch is written."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            raise KeyboardInterrupt("killed")


def weights(result) -> list[np.ndarray]:
    return result.encoder.get_weights() + result.decoder.get_weights()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    plan = ckpt.CheckpointPlan(tmp_path_factory.mktemp("whole") / "run", {}, 1e9)
    return train_vae(blobs(40), blobs(8, seed=9), TINY, CONFIG, checkpoints=plan)


@pytest.mark.parametrize(("epoch", "batch"), [(1, 2), (0, 4)], ids=["mid-epoch", "epoch-boundary"])
def test_a_resumed_training_has_the_weights_of_an_uninterrupted_one_bit_for_bit(
    tmp_path, uninterrupted, epoch, batch
):
    run = tmp_path / "run"
    every_batch = ckpt.CheckpointPlan(run, {}, 0.0)
    with pytest.raises(KeyboardInterrupt):
        train_vae(
            blobs(40),
            blobs(8, seed=9),
            TINY,
            CONFIG,
            checkpoints=every_batch,
            extra_callbacks=(Kill(epoch, batch),),
        )
    saved = ckpt.read_checkpoint(run)
    # 5 batches an epoch: killed after batch 3 of epoch 2, the checkpoint of batch 2 is left;
    # killed after epoch 1's last batch, epoch 1's (written at its end) is not yet there.
    assert (saved.epoch, saved.batch) == ((1, 2) if epoch == 1 else (0, 4))
    resumed = train_vae(
        blobs(40), blobs(8, seed=9), TINY, CONFIG, checkpoints=every_batch, resume=saved
    )
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]  # no gap, no repeat
    for mine, theirs in zip(weights(resumed), weights(uninterrupted), strict=True):
        np.testing.assert_array_equal(mine, theirs)  # the README's claim: bit for bit on CPU
    for mine, theirs in zip(resumed.history, uninterrupted.history, strict=True):
        for key in ("learning_rate", "kl_weight", "batches"):
            assert mine[key] == theirs[key], key
        # The reported losses are sums over pixels and images that several CPU threads may
        # add in another order (their value is on no gradient): equal to float32 rounding.
        for key in ("loss", "reconstruction", "kl", "val_loss"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-6), key


def test_the_fits_of_a_resumed_training():
    state = {"epoch": 2, "batch": 3}
    assert _segments(None, 5) == [(0, 5, 0)]
    assert _segments(ckpt.Checkpoint(state), 5) == [(2, 3, 3), (3, 5, 0)]
    assert _segments(ckpt.Checkpoint({"epoch": 2, "batch": 0}), 5) == [(2, 5, 0)]
    assert _segments(ckpt.Checkpoint({"epoch": 4, "batch": 1}), 5) == [(4, 5, 1)]
    assert _segments(ckpt.Checkpoint({"epoch": 5, "batch": 0}), 5) == []  # only the save left


def test_train_and_save_leaves_a_checkpoint_that_resume_finishes(tmp_path, monkeypatch):
    from dogvae import runs
    from dogvae.loaded_run import load_run

    run, dataset = interrupted_run(tmp_path, monkeypatch)
    assert (tmp_path / "run") == run
    assert sorted(os.listdir(run)) == [ckpt.CHECKPOINT_FILE]  # a run folder, already
    saved = ckpt.read_checkpoint(run)
    assert saved.describe() == "interrupted at epoch 1 of 2"
    assert [found.path for found in ckpt.list_interrupted(tmp_path)] == [saved.path]
    # Training afresh into it is refused, naming the way to go on.
    with pytest.raises(ValueError, match="--resume"):
        runs.check_run_target(run)
    with pytest.raises(ValueError, match="data has changed"):
        resume_and_save(saved, make_dataset(blobs(20, seed=1), validation=4))
    run_dir, result = resume_and_save(saved, dataset)
    assert result.status == "finished"
    assert [row["epoch"] for row in runs.read_history(run_dir)] == [1.0, 2.0]
    assert not ckpt.has_checkpoint(run_dir)  # the finished run replaced it
    assert load_run(run_dir).info.config["epochs_completed"] == 2


def test_the_cli_refuses_to_overwrite_an_interrupted_run_or_resume_on_changed_data(
    tmp_path, capsys
):
    from tests.conftest import write_dogs

    images = tmp_path / "images"
    write_dogs(images, 12)
    run = tmp_path / "run"
    state = {
        "epoch": 1,
        "batch": 0,
        "seconds": 1.0,
        "history": [],
        "settings": {
            "train": {"epochs": 2},
            "model": {},
            "data_config": {"image_size": 64},
            "fingerprint": "not these images",
            "source": {"path": str(images), "data_root": None},
            "data": {"train": 1, "validation": 0, "source": "before"},
        },
    }
    ckpt.write_checkpoint(run, ckpt.Checkpoint(state))
    assert main(["train", str(images), "--out", str(run), "--epochs", "1"]) == 2
    said = capsys.readouterr().err
    assert "holds an interrupted training" in said and f"--resume {run}" in said
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    assert "leave out --epochs" in capsys.readouterr().err
    assert main(["train", "--resume", str(run)]) == 2
    assert "the data has changed since" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "holds no interrupted training" in capsys.readouterr().err


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_intact(tmp_path):
    run = tmp_path / "run"
    ckpt.write_checkpoint(
        run, ckpt.Checkpoint({"epoch": 3, "batch": 0}, {"encoder": [np.arange(5.0)]})
    )
    writer = (
        "import sys, numpy as np\n"
        "from dogvae.training import checkpoint as c\n"
        "c.write_checkpoint(sys.argv[1], c.Checkpoint({'epoch': 4, 'batch': 0},"
        " {'encoder': [np.zeros(10**6)]}))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", writer, str(run)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), ckpt.PAUSE_ENV: "checkpoint:60"},
    )
    try:
        deadline = time.monotonic() + 60
        while not list(run.glob(".checkpoint.npz.tmp-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        temporary = list(run.glob(".checkpoint.npz.tmp-*"))
        assert temporary, "the writer never started its write"
        time.sleep(0.2)  # inside the pause: the new contents are written, not renamed
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    kept = ckpt.read_checkpoint(run)
    assert kept.epoch == 3
    np.testing.assert_array_equal(kept.arrays["encoder"][0], np.arange(5.0))
    ckpt.clear_leftovers(run)
    assert sorted(os.listdir(run)) == [ckpt.CHECKPOINT_FILE]


def test_a_damaged_or_foreign_checkpoint_is_refused_with_a_message(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ckpt.CHECKPOINT_FILE).write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="the checkpoint is damaged"):
        ckpt.read_checkpoint(run)
    assert ckpt.list_interrupted(tmp_path) == []


def test_the_checkpoint_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(ckpt.INTERVAL_ENV, raising=False)
    assert ckpt.checkpoint_interval() == 60.0
    monkeypatch.setenv(ckpt.INTERVAL_ENV, "0.5")
    assert ckpt.checkpoint_interval() == 0.5
    for wrong in ("soon", "0", "-1"):
        monkeypatch.setenv(ckpt.INTERVAL_ENV, wrong)
        with pytest.raises(ValueError, match=ckpt.INTERVAL_ENV):
            ckpt.checkpoint_interval()


def test_a_save_killed_between_its_renames_is_put_back_for_resume(tmp_path):
    run = tmp_path / "run"
    ckpt.write_checkpoint(run, ckpt.Checkpoint({"epoch": 2, "batch": 0}))
    aside = tmp_path / ".run.old-1234"
    os.rename(run, aside)
    ckpt.recover_run(run)
    assert ckpt.read_checkpoint(run).epoch == 2 and not aside.exists()


def test_without_mid_epoch_checkpoints_only_epoch_ends_are_written_without_running_losses(
    tmp_path,
):
    """What a multi-worker chief writes: reading the running losses there is a collective
    operation that the other workers would never join."""
    from types import SimpleNamespace

    from dogvae.model import build_vae
    from dogvae.training.checkpointer import Checkpointer

    vae = build_vae(TINY)
    vae.compile(optimizer=keras.optimizers.Adam())
    now = time.perf_counter()
    live = SimpleNamespace(
        batches=1,
        steps=5,
        status="finished",
        epoch=0,
        started=now,
        epoch_started=now,
        learning_rate=1e-3,
        history=[{"epoch": 1}],
        last_samples=None,
    )
    for mid_epoch, run_dir in ((False, tmp_path / "multi"), (True, tmp_path / "single")):
        writer = Checkpointer(
            run_dir=run_dir, settings={}, live=live, interval=1e-9, mid_epoch=mid_epoch
        )
        writer.set_model(vae)
        writer.on_train_batch_end(0, {"loss": 1.0})
        assert ckpt.has_checkpoint(run_dir) is mid_epoch
        if mid_epoch:
            assert ckpt.read_checkpoint(run_dir).arrays["metrics"]  # the batch's running losses
    writer = Checkpointer(
        run_dir=tmp_path / "multi", settings={}, live=live, interval=1e-9, mid_epoch=False
    )
    writer.set_model(vae)
    writer.on_epoch_end(0)
    written = ckpt.read_checkpoint(tmp_path / "multi")
    assert (written.epoch, written.batch) == (1, 0)
    assert written.arrays["metrics"] == [] and written.arrays["encoder"]


def test_a_run_saved_under_the_name_waits_for_a_checkpoint_half_written_there(
    tmp_path, monkeypatch
):
    """Two trainings under one name (two sessions or servers): one's final save swaps
    the folder while the other's checkpoint is half written in it. The runs folder's
    lock makes the save wait; without it the checkpoint's rename failed and that
    training ended with an error (a 1-in-8 failure of test_app_sessions)."""
    import threading

    from dogvae.model import build_decoder, build_encoder
    from tests.conftest import save_test_run

    run_dir = tmp_path / "runs" / "same"
    writing, release = threading.Event(), threading.Event()

    def pause(where: str) -> None:
        if where == "checkpoint" and threading.current_thread().name == "writer":
            writing.set()
            release.wait(30)

    monkeypatch.setattr(ckpt, "pause_for_tests", pause)
    ckpt.write_checkpoint(run_dir, ckpt.Checkpoint({"epoch": 1, "batch": 0}))  # the folder
    errors: list[BaseException] = []

    def attempt(work):
        try:
            work()
        except BaseException as error:  # reported by the test's assertion
            errors.append(error)

    writer = threading.Thread(
        name="writer",
        target=attempt,
        args=(lambda: ckpt.write_checkpoint(run_dir, ckpt.Checkpoint({"epoch": 2, "batch": 0})),),
    )
    writer.start()
    assert writing.wait(30)
    saved: list = []
    encoder, decoder = build_encoder(TINY), build_decoder(TINY)
    saver = threading.Thread(
        target=attempt,
        args=(
            lambda: saved.append(
                save_test_run(run_dir, encoder, decoder, model_config=TINY, replace=False)
            ),
        ),
    )
    saver.start()
    saver.join(1.0)  # the save is waiting for the half-written checkpoint...
    release.set()  # ...which is then finished
    writer.join(30), saver.join(30)
    assert not errors, errors
    assert saved == [run_dir]  # the folder held only a checkpoint: the save took its place
    assert (run_dir / "config.json").is_file()
    assert not ckpt.has_checkpoint(run_dir)  # the checkpoint went with the swapped-out folder
