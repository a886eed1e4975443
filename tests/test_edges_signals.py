"""Second signals: the server starts one saver however many arrive; the CLI aborts unsaved."""

from __future__ import annotations

import signal
import textwrap

import pytest

from tests.conftest import read_until, run_python, start_python, write_dogs

# A server process at the moment of its signals: a training running in its thread,
# uvicorn's own handler (here one that ignores the signal) behind serve.py's.
SERVER_SCRIPT = textwrap.dedent(
    """
    import signal, sys, threading, time
    from pathlib import Path

    import serve
    from dogvae.config import DataConfig, ModelConfig, TrainConfig
    from dogvae.data import load_dataset
    from dogvae.training import TrainingJob
    from dogvae.web import before_signals
    from tests.conftest import write_dogs

    root = Path(sys.argv[1])
    write_dogs(root / "images", 16)
    data_config = DataConfig(image_size=32)
    job = TrainingJob(
        dataset=load_dataset(root / "images", data_config, cache=False),
        model_config=ModelConfig(image_size=32, conv_filters=(8, 16), dense_units=16, latent_dim=2),
        train_config=TrainConfig(epochs=10_000, batch_size=4),
        data_config=data_config,
        out_dir=root / "run",
    ).start()
    while job.last_batch() is None:
        job.wait(0.1)
    serve.EXIT_GRACE_SECONDS = 1.0
    signal.signal(signal.SIGTERM, lambda number, frame: None)
    before_signals(serve._on_signal, [signal.SIGTERM])
    print("training", job.running, flush=True)
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGTERM)
    savers = [thread for thread in threading.enumerate() if thread.name == "dogvae-save"]
    print("savers", len(savers), flush=True)
    serve._saved.wait(120)
    print("saved", job.status, flush=True)
    time.sleep(60)  # a server stuck on a connection: the saver's grace period ends it
    """
)


def test_a_second_signal_to_the_server_starts_no_second_saver(tmp_path):
    child = run_python("-c", SERVER_SCRIPT, tmp_path, timeout_s=300)
    assert child.stdout.splitlines() == ["training True", "savers 1", "saved stopped"], (
        child.stdout + child.stderr[-2000:]
    )
    assert child.stderr.count("dogvae: the server is shutting down;") == 1, child.stderr[-2000:]
    assert "saved run (stopped)" in child.stderr
    assert child.returncode == 128 + signal.SIGTERM
    assert (tmp_path / "run" / "config.json").is_file()


@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM"])
def test_a_second_signal_aborts_the_cli_training_without_saving(tmp_path, stop_signal):
    """README: Ctrl-C or SIGTERM stops after the batch and saves; a second one aborts."""
    write_dogs(tmp_path / "images", 24)
    run_dir = tmp_path / "run"
    child = start_python(
        "-m", "dogvae", "train", tmp_path / "images", "--out", run_dir,
        "--epochs", "10000", "--batch-size", "8",
    )  # fmt: skip
    try:
        read_until(child, "epoch 1/", timeout_s=240)
        child.send_signal(getattr(signal, stop_signal))
        # The first one handled (two signals before that would count as one), the
        # second follows at once: the batch still has to end, then the save to run.
        read_until(child, "stopping after this batch", timeout_s=60)
        child.send_signal(getattr(signal, stop_signal))
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "dogvae train: interrupted", err[-2000:]
    assert "saved " not in out, out
    # Nothing half-written either: an interrupted save removes its hidden folder.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["images"]
