"""AppTest: interrupted trainings on the Models page, and Resume continuing one on Train."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dogvae import runs, ui
from dogvae.training import checkpoint as ckpt
from tests.training_helpers import interrupted_run

APP = Path(__file__).parent.parent / "streamlit_app.py"


def models_page(dataset=None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    if dataset is not None:
        at.session_state[ui.DATASET] = dataset
    at.run()
    at.switch_page("pages/models.py").run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def test_an_interrupted_training_is_listed_with_its_epoch_and_a_resume_button(runs_folder):
    state = {
        "epoch": 32,
        "batch": 0,
        "seconds": 1234.0,
        "history": [],
        "settings": {"preset": "quality", "train": {"epochs": 50}},
    }
    ckpt.write_checkpoint(runs_folder / "halfway", ckpt.Checkpoint(state))
    at = models_page()
    page = texts(at.markdown) + texts(at.subheader)
    assert "Interrupted at epoch 32 of 50" in page and "halfway" in page
    assert [button.label for button in at.button] == ["Resume"]
    assert not at.warning  # not reported as a broken folder


def test_resume_goes_on_from_epoch_n_on_the_train_page(runs_folder, monkeypatch):
    run, dataset = interrupted_run(runs_folder, monkeypatch)
    at = models_page(dataset)
    at.button(key="resume-run").click().run()
    assert not at.exception, [error.value for error in at.exception]
    assert [title.value for title in at.title] == ["Train"]  # Resume switched pages
    job = at.session_state[ui.JOB]
    assert job.resume is not None and job.out_dir == run
    # The chart starts with the epoch done before the kill: epoch 1, then epoch 2 trains.
    assert job.epochs()[0]["epoch"] == 1 and "samples" in job.epochs()[0]
    assert job.batches()[0]["epoch"] == 1
    deadline = time.monotonic() + 120
    while job.running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.status == "finished", job.message
    assert [row["epoch"] for row in job.epochs()] == [1, 2]
    assert [row["epoch"] for row in runs.read_history(run)] == [1.0, 2.0]
    assert not ckpt.has_checkpoint(run)
    at.switch_page("pages/train.py").run()  # AppTest reruns the page it was told, Models
    assert "Training finished" in texts(at.success)


def test_resume_without_its_data_says_how_to_get_it(runs_folder, monkeypatch):
    run, _ = interrupted_run(runs_folder, monkeypatch)
    at = models_page()  # nothing loaded, and the recorded source does not exist
    at.button(key="resume-run").click().run()
    assert "load 'test' on the Data page" in texts(at.error)
    assert ui.JOB not in at.session_state
    assert ckpt.has_checkpoint(run)


SERVER = """
import sys, time
from pathlib import Path
from dogvae.config import DataConfig, ModelConfig, TrainConfig
from dogvae.data import load_dataset
from dogvae.training import TrainingJob

images, run = Path(sys.argv[1]), Path(sys.argv[2])
dataset = load_dataset(images, DataConfig())
job = TrainingJob(
    dataset=dataset,
    model_config=ModelConfig(),
    train_config=TrainConfig(epochs=500, batch_size=8),
    data_config=DataConfig(),
    out_dir=run,
    preset="seed",
    source={"path": str(images), "data_root": None},
).start()
print("training", flush=True)
job.wait()
"""


@pytest.mark.slow
def test_a_server_killed_mid_training_lists_the_run_and_resumes_it(app_dirs):
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO, write_dogs

    data_dir, runs_dir = app_dirs
    write_dogs(data_dir / "dogs", 16)
    run = runs_dir / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), ckpt.INTERVAL_ENV: "0.3"}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(data_dir / "dogs"), str(run)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if ckpt.read_checkpoint(run, arrays=False).epoch >= 2:
                    break
            except (FileNotFoundError, ValueError):
                pass
            assert server.poll() is None, "the training process ended by itself"
            time.sleep(0.1)
        server.send_signal(signal.SIGKILL)
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    saved = ckpt.read_checkpoint(run)
    at = models_page()  # a new server: nothing in memory, the data loaded again from its source
    assert saved.describe().capitalize() in texts(at.markdown)
    at.button(key="resume-killed").click().run()
    assert not at.exception, [error.value for error in at.exception]
    job = at.session_state[ui.JOB]
    done = len(saved.history)
    assert [row["epoch"] for row in job.epochs()][:done] == list(range(1, done + 1))
    while len(job.epochs()) < done + 1 and job.running:
        time.sleep(0.1)
    job.stop()
    assert job.wait(120) and job.status == "stopped", job.message
    epochs = [row["epoch"] for row in runs.read_history(run)]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > done
