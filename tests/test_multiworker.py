"""Multi-worker training for real: two worker processes on loopback ports, against MirroredStrategy.

Two ``python -m dogvae train --strategy multiworker`` processes form a cluster
through TF_CONFIG and train the same 2 epochs on the same generated images; a
third process trains the same command under MirroredStrategy on the CPU split
into two logical devices. With the pipeline's data sharding both see the same
global batches, split the same way between two replicas, and start from the same
seeded weights, so the losses agree (see LOSS_TOLERANCE). And Ctrl-C on one
worker stops both at the same batch.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, write_dogs

TIME_LIMIT = 240.0  # seconds for the whole test, both workers and the reference included
# Relative difference allowed between the chief's and the mirrored run's per-epoch
# losses. Measured here: none, the four losses of both epochs agree bit for bit: a
# sum of two replicas' gradients is the same in either order, and each replica
# draws the same posterior noise from the same seed.
LOSS_TOLERANCE = 1e-6
TRAIN = ["--epochs", "2", "--batch-size", "32", "--preset", "seed", "--flip", "--shift", "2"]

# The reference: the same CLI command under MirroredStrategy over two logical CPUs
# (which must be configured before TensorFlow initialises, hence a process of its own).
MIRRORED = textwrap.dedent(
    """
    import sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import dogvae.training

    dogvae.training.make_strategy = lambda name: tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"]
    )
    from dogvae.cli import main

    sys.exit(main(sys.argv[1:]))
    """
)


def free_ports(count: int) -> list[int]:
    """Ports that were free on 127.0.0.1 a moment ago (bound to port 0, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


def start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """``python ARGS`` from the repository, its output into ``log``."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    environment.pop("TF_CONFIG", None)  # only the workers are given one
    environment.update(env)
    with log.open("w") as handle:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=environment,
        )


def start_worker(tmp_path: Path, index: int, ports: list[int], *args: str) -> subprocess.Popen:
    """Worker ``index`` of the cluster on ``ports``: ``train`` into tmp_path/worker<index>,
    its output in tmp_path/worker<index>.log."""
    worker = tmp_path / f"worker{index}"
    worker.mkdir()
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    command = ["-m", "dogvae", "train", str(tmp_path / "images"), "--strategy", "multiworker"]
    out = ["--out", str(worker / "run"), "--tensorboard", str(worker / "tensorboard")]
    return start(
        [*command, *out, *args],
        tmp_path / f"worker{index}.log",
        TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        DOGVAE_CACHE_DIR=str(tmp_path / f"cache{index}"),
    )


def wait_all(children: dict[str, subprocess.Popen], tmp_path: Path, deadline: float) -> None:
    """Wait for every child until ``deadline`` (monotonic); each must exit 0."""
    for name, child in children.items():
        log = tmp_path / f"{name}.log"
        try:
            child.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still ran after {TIME_LIMIT:.0f} s:\n{log.read_text()[-3000:]}")
        assert child.returncode == 0, f"{name} failed:\n{log.read_text()[-3000:]}"


def end_all(children: dict[str, subprocess.Popen]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.kill()
        child.wait()


def history(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "history.csv").open() as handle:
        return [
            {key: float(row[key]) for key in ("loss", "reconstruction", "kl", "val_loss")}
            for row in csv.DictReader(handle)
        ]


@pytest.mark.slow
def test_two_workers_train_together_and_match_mirrored(tmp_path):
    write_dogs(tmp_path / "images", 64)
    ports = free_ports(2)
    children: dict[str, subprocess.Popen] = {}
    try:
        for index in (0, 1):
            children[f"worker{index}"] = start_worker(tmp_path, index, ports, *TRAIN)
        mirrored = ["train", str(tmp_path / "images"), *TRAIN, "--strategy", "mirrored"]
        children["mirrored"] = start(
            ["-c", MIRRORED, *mirrored, "--out", str(tmp_path / "mirrored")],
            tmp_path / "mirrored.log",
            DOGVAE_CACHE_DIR=str(tmp_path / "cache2"),
        )
        wait_all(children, tmp_path, time.monotonic() + TIME_LIMIT)
    finally:
        end_all(children)

    # Only the chief (worker 0) wrote, its run and its TensorBoard logs: worker 1 nothing.
    assert (tmp_path / "worker0" / "run" / "config.json").is_file()
    assert list((tmp_path / "worker0" / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((tmp_path / "worker1").iterdir()) == []
    assert "The chief saves the run" in (tmp_path / "worker1.log").read_text()

    chief, mirrored = history(tmp_path / "worker0" / "run"), history(tmp_path / "mirrored")
    assert len(chief) == len(mirrored) == 2
    for chief_row, mirrored_row in zip(chief, mirrored, strict=True):
        for key, value in mirrored_row.items():
            assert chief_row[key] == pytest.approx(value, rel=LOSS_TOLERANCE), (
                key,
                chief,
                mirrored,
            )
    # The two trainings moved: the comparison is not of two untrained models.
    assert chief[1]["loss"] != chief[0]["loss"]


@pytest.mark.slow
def test_ctrl_c_on_one_worker_stops_both_at_the_same_batch_and_the_chief_saves(tmp_path):
    """A worker that stopped alone would leave the other waiting in its next collective step."""
    write_dogs(tmp_path / "images", 64)
    ports = free_ports(2)
    children: dict[str, subprocess.Popen] = {}
    deadline = time.monotonic() + TIME_LIMIT
    try:
        for index in (0, 1):
            children[f"worker{index}"] = start_worker(
                tmp_path, index, ports, "--epochs", "200", "--batch-size", "32"
            )
        log = tmp_path / "worker1.log"
        while "epoch 1/200" not in log.read_text():
            assert time.monotonic() < deadline, f"no epoch in time:\n{log.read_text()[-3000:]}"
            assert children["worker1"].poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        children["worker1"].send_signal(signal.SIGINT)  # Ctrl-C on the second worker only
        wait_all(children, tmp_path, deadline)
    finally:
        end_all(children)

    config = json.loads((tmp_path / "worker0" / "run" / "config.json").read_text())
    assert config["status"] == "stopped"
    assert 1 <= config["epochs_completed"] < 200
    assert "trained (stopped)" in (tmp_path / "worker1.log").read_text()
    assert list((tmp_path / "worker1").iterdir()) == []
