"""Multi-worker training for real: two worker processes on loopback ports, against MirroredStrategy.

Two ``python -m dogvae train --strategy multiworker`` processes form a cluster
through TF_CONFIG and train the same 2 epochs on the same generated images; a
third process trains the same command under MirroredStrategy on the CPU split
into two logical devices. With the pipeline's data sharding both see the same
global batches, split the same way between two replicas, and start from the same
seeded weights, so the losses agree (see LOSS_TOLERANCE).
"""

from __future__ import annotations

import csv
import json
import os
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
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    children: dict[str, tuple[subprocess.Popen, Path]] = {}
    command = ["-m", "dogvae", "train", str(tmp_path / "images"), *TRAIN]
    try:
        for index in (0, 1):
            worker = tmp_path / f"worker{index}"
            worker.mkdir()
            children[f"worker {index}"] = (
                start(
                    [
                        *command,
                        "--strategy",
                        "multiworker",
                        "--out",
                        str(worker / "run"),
                        "--tensorboard",
                        str(worker / "tensorboard"),
                    ],
                    tmp_path / f"worker{index}.log",
                    TF_CONFIG=json.dumps(
                        {"cluster": cluster, "task": {"type": "worker", "index": index}}
                    ),
                    DOGVAE_CACHE_DIR=str(tmp_path / f"cache{index}"),
                ),
                tmp_path / f"worker{index}.log",
            )
        children["mirrored"] = (
            start(
                [
                    "-c",
                    MIRRORED,
                    "train",
                    str(tmp_path / "images"),
                    *TRAIN,
                    "--strategy",
                    "mirrored",
                    "--out",
                    str(tmp_path / "mirrored"),
                ],
                tmp_path / "mirrored.log",
                DOGVAE_CACHE_DIR=str(tmp_path / "cache2"),
            ),
            tmp_path / "mirrored.log",
        )
        deadline = time.monotonic() + TIME_LIMIT
        for name, (child, log) in children.items():
            try:
                child.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"{name} still ran after {TIME_LIMIT:.0f} s:\n{log.read_text()[-3000:]}"
                )
            assert child.returncode == 0, f"{name} failed:\n{log.read_text()[-3000:]}"
    finally:
        for child, _ in children.values():
            if child.poll() is None:
                child.kill()
            child.wait()

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
