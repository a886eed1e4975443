"""AppTest: interrupted trainings on the Models page, and Resume continuing one on Train."""

from __future__ import annotations

import time
from pathlib import Path

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
    assert "load 'memory' on the Data page" in texts(at.error)
    assert ui.JOB not in at.session_state
    assert ckpt.has_checkpoint(run)
