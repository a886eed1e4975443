"""Background trainings: TrainingJob in a thread, the slots, a closed tab, a shutdown."""

import threading

import pytest

from dogvae.config import DataConfig, TrainConfig
from dogvae.training import TrainingJob, TrainingSlots, save_running_jobs
from tests.training_helpers import TINY, blobs, in_memory_dataset, shutdown_job


def test_training_slots_cap_concurrent_trainings():
    slots = TrainingSlots(1)
    slots.acquire()
    with pytest.raises(RuntimeError, match="already running"):
        slots.acquire()
    slots.release()
    slots.acquire()
    assert slots.running == 1


def test_training_job_runs_in_a_thread_saves_and_can_be_stopped(tmp_path):
    from dogvae.runs import read_run_info

    data_config = DataConfig(image_size=32)
    job = TrainingJob(
        dataset=in_memory_dataset(blobs(40)),
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
        dataset=in_memory_dataset(blobs(12)),
        model_config=TINY,
        train_config=TrainConfig(epochs=1, batch_size=4),
        data_config=DataConfig(image_size=32),
        out_dir=tmp_path / "taken",
        slots=slots,
    ).start()
    job.wait(60)
    assert job.status == "failed" and "not a folder" in job.message
    assert slots.running == 0  # the slot is given back


def test_an_abandoned_job_stops_itself_and_still_saves(tmp_path):
    """A closed browser tab: the session check turns False, the job stops within seconds."""
    wanted = threading.Event()
    wanted.set()
    job = TrainingJob(
        dataset=in_memory_dataset(blobs(40)),
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


def test_a_server_shutting_down_stops_its_trainings_and_saves_them(tmp_path):
    job = shutdown_job(tmp_path / "run").start()
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
from tests.training_helpers import shutdown_job
job = shutdown_job(Path(sys.argv[1])).start()
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


def test_importing_the_package_and_its_jobs_leaves_tensorflow_unloaded():
    # The server and the Train page import TrainingJob at start-up; TensorFlow
    # loads when a training starts.
    from tests.conftest import run_python

    result = run_python(
        "-c",
        "import sys; import dogvae.training, dogvae.training.jobs; "
        "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
