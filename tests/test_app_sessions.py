"""Two sessions on one server (two AppTests on one runs folder): deletes and saves that cross.

One session deletes the run that the other has active, or that the other is about
to delete; both save runs under one name at the same moment. Nothing is lost and
each session is told what happened, without a traceback.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import pytest

from dogvae import runs
from dogvae.config import DataConfig, ModelConfig, TrainConfig
from tests.conftest import open_app, save_test_run, write_dogs


@pytest.fixture(scope="module")
def saved_models():
    from dogvae.model import build_decoder, build_encoder

    models = build_encoder(ModelConfig()), build_decoder(ModelConfig())
    gc.freeze()  # AppTest's garbage collection after each run would walk TensorFlow
    return models


@pytest.fixture
def three_runs(runs_folder, tmp_path, monkeypatch, saved_models) -> Path:
    """alpha and beta in the runs folder, and a default model outside it."""
    for name in ("alpha", "beta"):
        save_test_run(runs_folder / name, *saved_models)
        time.sleep(0.01)
    default = save_test_run(tmp_path / "default", *saved_models)
    monkeypatch.setenv("DOGVAE_DEFAULT_RUN", str(default))
    return runs_folder


def run(target):
    at = target.run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def test_the_active_run_deleted_in_another_session_falls_back_to_the_default_saying_so(
    three_runs, tmp_path
):
    watcher, deleter = open_app("models"), open_app("models")
    run(watcher.button(key="activate-alpha").click())
    assert watcher.session_state["active_run"] == str(three_runs / "alpha")

    run(deleter.button(key="delete-alpha").click())
    run(deleter.button(key="confirm-delete-alpha").click())
    assert "Deleted run alpha." in texts(deleter.success)
    assert not (three_runs / "alpha").exists()

    watcher.switch_page("pages/generate.py")
    run(watcher)
    warning = texts(watcher.sidebar.warning)
    assert "The active model **alpha** was deleted" in warning
    assert "**default** is active instead" in warning
    assert watcher.session_state["active_run"] == str(tmp_path / "default")
    assert watcher.image, "the page goes on with the default model"
    run(watcher)
    assert not watcher.sidebar.warning, "said once"
    assert (three_runs / "beta" / "config.json").is_file()


def test_a_delete_confirmed_after_another_session_deleted_the_run_says_so(three_runs):
    first, second = open_app("models"), open_app("models")
    run(first.button(key="delete-alpha").click())
    run(second.button(key="delete-alpha").click())
    run(second.button(key="confirm-delete-alpha").click())
    run(first.button(key="confirm-delete-alpha").click())
    assert "Run alpha was deleted in another session meanwhile." in texts(first.info)
    assert not first.error
    assert "models_pending_delete" not in first.session_state
    assert [run.name for run in runs.list_runs(three_runs)[0]] == ["beta"]


def test_two_deletes_at_the_same_moment_both_end_with_the_run_deleted(three_runs, monkeypatch):
    delete_run = runs.delete_run

    def the_other_session_first(run_dir):
        delete_run(run_dir)  # the other session's delete lands between listing and this one
        delete_run(run_dir)

    at = open_app("models")
    run(at.button(key="delete-alpha").click())
    monkeypatch.setattr(runs, "delete_run", the_other_session_first)
    run(at.button(key="confirm-delete-alpha").click())
    assert "Run alpha was already deleted, in another session." in texts(at.success)
    assert not at.error
    assert list(at.dataframe[0].value["run"]) == ["beta", "default"]


def train_session(data_dir: Path):
    from dogvae.data import load_dataset

    app = open_app()
    app.session_state["dataset"] = load_dataset(data_dir / "dogs", DataConfig())
    app.switch_page("pages/train.py")
    return run(app)


def start_training(app, name: str, epochs: int) -> None:
    number = {box.label: box for box in app.number_input}
    number["Epochs"].set_value(epochs)
    number["Batch size"].set_value(8)
    app.text_input(key="run_name").set_value(name)
    next(b for b in app.button if b.label == "Start training").click()
    run(app)


def test_a_name_another_session_is_training_into_is_refused(app_dirs):
    data_dir, runs_dir = app_dirs
    write_dogs(data_dir / "dogs", 16)
    first, second = train_session(data_dir), train_session(data_dir)
    start_training(first, "shared", epochs=200)
    job = first.session_state["training_job"]
    try:
        assert job.running
        start_training(second, "shared", epochs=1)
        assert "A training named 'shared' is already running on this server" in texts(second.error)
        assert "training_job" not in second.session_state
    finally:
        job.stop()
        job.wait(120)
    assert job.status == "stopped" and (runs_dir / "shared" / "config.json").is_file()


def test_two_trainings_saving_under_one_name_at_once_both_keep_their_run(app_dirs):
    from dogvae.data import load_dataset
    from dogvae.training import TrainingJob

    data_dir, runs_dir = app_dirs
    write_dogs(data_dir / "dogs", 16)
    dataset = load_dataset(data_dir / "dogs", DataConfig())
    # Both started before either runs, as two servers on one runs folder would.
    jobs = [
        TrainingJob(
            dataset=dataset,
            model_config=ModelConfig(),
            train_config=TrainConfig(epochs=1, batch_size=8),
            data_config=DataConfig(),
            out_dir=runs_dir / "same",
        )
        for _ in range(2)
    ]
    go = threading.Barrier(2)
    threads = [threading.Thread(target=lambda job=job: (go.wait(), job.start())) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for job in jobs:
        assert job.wait(120) and job.status == "finished", job.message
    assert sorted(job.run_dir.name for job in jobs) == ["same", "same-2"]
    second = next(job for job in jobs if job.run_dir.name == "same-2")
    assert "A run named 'same' was saved while this one trained" in second.message
    assert "saved as 'same-2'" in second.message
    for job in jobs:
        assert runs.read_run_info(job.run_dir).config["status"] == "finished"
