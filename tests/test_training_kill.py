"""kill -9 in real processes: inside an epoch, inside a checkpoint write, inside the final
save. After every kill the run folder holds an intact checkpoint (or the finished run), the
next ``train --resume`` goes on from it, and the last one finishes a run that loads, with
the losses of the other runs, killed at other moments."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from dogvae.training import checkpoint as ckpt
from tests.conftest import REPO, write_dogs

pytestmark = pytest.mark.slow

EPOCHS = 6  # 36 training images in batches of 8: 5 batches an epoch, 30 in all
# What each process of a chain is killed in; the process after the last one finishes.
KILLS = ("epoch", "checkpoint", "epoch", "checkpoint", "save")
CHAINS = 4  # 4 x 5 = 20 kills
WAIT_SECONDS = 120  # for one process to reach the moment it is killed in
PAUSES = {"checkpoint": "checkpoint:0.5", "save": "save:3"}  # DOGVAE_TEST_PAUSE per kind


def start(args: list[str], pause: str | None, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), ckpt.INTERVAL_ENV: "0.3"}
    env.pop(ckpt.PAUSE_ENV, None)
    if pause:
        env[ckpt.PAUSE_ENV] = pause
    return subprocess.Popen(
        [sys.executable, "-m", "dogvae", "train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def wait_for(condition, child: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if child.poll() is not None:
            raise AssertionError(f"the training ended ({child.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {WAIT_SECONDS} s")
        time.sleep(0.02)


def modified(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def position(run: Path) -> tuple[int, int]:
    """The checkpoint's (epochs done, batches into the next), read as resume reads it."""
    saved = ckpt.read_checkpoint(run)  # raises if a kill left it damaged
    assert len(saved.arrays["encoder"]) > 0 and len(saved.arrays["optimizer"]) > 0
    return saved.epoch, saved.batch


def chain(data: Path, run: Path, seed: int, children: list, lock: threading.Lock) -> int:
    """Train into ``run``, killing each process as KILLS says; returns the kills made."""
    rng = random.Random(seed)
    reached = (0, 0)
    for number, kind in enumerate(KILLS):
        args = [str(data), "--out", str(run), "--epochs", str(EPOCHS), "--batch-size", "8"]
        if number:
            args = ["--resume", str(run)]
        child = start(args, PAUSES.get(kind))
        with lock:
            children.append(child)
        before = modified(run / ckpt.CHECKPOINT_FILE)
        if kind == "epoch":  # once this process has written a checkpoint of its own
            wait_for(
                lambda b=before: modified(run / ckpt.CHECKPOINT_FILE) != b, child, "checkpoint"
            )
            time.sleep(rng.uniform(0, 0.6))
        elif kind == "checkpoint":  # inside the write: written, synced, not yet renamed
            wait_for(lambda: any(run.glob(".checkpoint.npz.tmp-*")), child, "checkpoint write")
            time.sleep(rng.uniform(0.05, 0.3))
        else:  # inside the final save: the new folder complete, not yet swapped in
            wait_for(
                lambda: any(run.parent.glob(f".{run.name}.tmp-*/config.json")),
                child,
                "final save",
            )
            time.sleep(rng.uniform(0, 1))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        assert child.returncode == -signal.SIGKILL
        # What a kill leaves: the checkpoint intact, at or past where the last one was.
        now = position(run)
        assert now >= reached, f"{kind} kill {number}: the checkpoint went back"
        reached = now
    assert reached == (EPOCHS, 0)  # the last kill came during the final save
    return len(KILLS)


def finish(run: Path, children: list, lock: threading.Lock) -> None:
    child = start(["--resume", str(run)], None, subprocess.PIPE)
    with lock:
        children.append(child)
    _, err = child.communicate(timeout=WAIT_SECONDS)
    assert child.returncode == 0, err[-2000:]


def test_twenty_kills_at_random_moments_then_resume_finishes_a_run_that_loads(tmp_path):
    from dogvae import runs
    from dogvae.loaded_run import load_run

    data = tmp_path / "images"
    write_dogs(data, 40)
    children: list[subprocess.Popen] = []
    lock = threading.Lock()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            chains = [
                pool.submit(chain, data, tmp_path / f"run{index}", index, children, lock)
                for index in range(CHAINS)
            ]
            kills = sum(future.result() for future in chains)
            finishes = [
                pool.submit(finish, tmp_path / f"run{index}", children, lock)
                for index in range(CHAINS)
            ]
            for future in finishes:
                future.result()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert kills >= 20
    losses = []
    for index in range(CHAINS):
        run = tmp_path / f"run{index}"
        assert not ckpt.has_checkpoint(run)
        history = runs.read_history(run)
        assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
        assert all(row["batches"] == 5 for row in history)  # every epoch whole, once
        loaded = load_run(run)
        assert loaded.info.config["status"] == "finished"
        losses.append([(row["loss"], row["val_loss"]) for row in history])
    # Killed at different moments, the four runs still trained alike (to float32 rounding,
    # see test_training_checkpoint).
    for chain_losses in losses[1:]:
        assert np.allclose(chain_losses, losses[0], rtol=1e-6, atol=0)
    print(f"{kills} kills and {CHAINS} resumed runs in {time.monotonic() - started:.0f} s")
