"""The Train page's server-wide edges: a closed tab's training, two sessions training at once."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import open_app, write_dogs


class FakeRuntime:
    """Streamlit's Runtime as session_is_open sees it: which sessions are connected."""

    def __init__(self, *sessions: str) -> None:
        self.active = set(sessions)

    def is_active_session(self, session_id: str) -> bool:
        return session_id in self.active


def in_session(monkeypatch: pytest.MonkeyPatch, runtime: FakeRuntime | None, session_id: str):
    """Make the calling code look like a script run of ``session_id`` on ``runtime``."""
    import streamlit.runtime
    from streamlit.runtime import scriptrunner

    context = None if runtime is None else type("Context", (), {"session_id": session_id})()
    monkeypatch.setattr(scriptrunner, "get_script_run_ctx", lambda *args, **kwargs: context)
    monkeypatch.setattr(streamlit.runtime, "exists", lambda: runtime is not None)
    monkeypatch.setattr(streamlit.runtime.Runtime, "instance", staticmethod(lambda: runtime))


def test_the_session_check_follows_this_browser_session(monkeypatch):
    from dogvae import ui

    runtime = FakeRuntime("mine", "theirs")
    in_session(monkeypatch, runtime, "mine")
    is_open = ui.session_is_open()
    assert is_open() is True
    runtime.active.discard("theirs")  # another user leaving changes nothing here
    assert is_open() is True
    runtime.active.discard("mine")  # this tab closes
    answers: list[bool] = []
    watcher = threading.Thread(target=lambda: answers.append(is_open()))  # as the job asks
    watcher.start()
    watcher.join()
    assert answers == [False] and is_open() is False
    runtime.active.add("mine")  # a reconnect within the grace period
    assert is_open() is True


def test_outside_a_running_server_the_session_counts_as_open(monkeypatch):
    from dogvae import ui

    in_session(monkeypatch, None, "")
    assert ui.session_is_open()() is True


@pytest.mark.parametrize(
    "value, seconds", [(None, 30.0), ("2.5", 2.5), ("soon", 30.0), ("0", 30.0), ("inf", 30.0)]
)
def test_the_grace_period_is_settable(monkeypatch, value, seconds):
    from dogvae import ui

    if value is None:
        monkeypatch.delenv("DOGVAE_ABANDON_SECONDS", raising=False)
    else:
        monkeypatch.setenv("DOGVAE_ABANDON_SECONDS", value)
    assert ui.abandon_seconds() == seconds


@pytest.fixture
def dataset(app_dirs):
    """A 16-image dataset loaded as the Train page needs it, and the runs folder."""
    from dogvae.config import DataConfig
    from dogvae.data import load_dataset

    data_dir, runs_dir = app_dirs
    write_dogs(data_dir / "dogs", 16)
    return load_dataset(data_dir / "dogs", DataConfig(), cache=False), runs_dir


def train_page(dataset):
    """A new browser session on the Train page with ``dataset`` loaded."""
    app = open_app()
    app.session_state["dataset"] = dataset
    app.switch_page("pages/train.py").run()
    assert not app.exception, app.exception
    return app


def start_long_training(app, name: str):
    """Fill in the form for a training that runs until stopped, and start it."""
    number = {box.label: box for box in app.number_input}
    number["Epochs"].set_value(5000)
    number["Batch size"].set_value(4)
    app.text_input(key="run_name").set_value(name)
    next(button for button in app.button if button.label == "Start training").click()
    app.run()
    assert not app.exception, app.exception
    return app.session_state.get("training_job")


def wait_for_batches(job, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while job.last_batch() is None and job.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.running and job.last_batch() is not None, job.message


def saved(runs_dir: Path, name: str) -> dict:
    return json.loads((runs_dir / name / "config.json").read_text())


def test_a_training_whose_tab_closed_stops_after_the_grace_period_and_says_why(
    dataset, monkeypatch
):
    from dogvae import ui

    images, runs_dir = dataset
    connected = threading.Event()
    connected.set()
    # The page's own wiring, with the browser's connection played by an Event.
    monkeypatch.setattr(ui, "session_is_open", lambda: connected.is_set)
    monkeypatch.setenv("DOGVAE_ABANDON_SECONDS", "1.5")
    job = start_long_training(train_page(images), "left-open")
    assert job.abandon_after == 1.5
    wait_for_batches(job)
    connected.clear()  # the tab closes
    closed = time.monotonic()
    assert job.wait(60), "the training went on after its tab closed"
    assert time.monotonic() - closed >= 1.5  # not before the grace period
    assert job.status == "stopped" and job.abandoned
    config = saved(runs_dir, "left-open")
    assert config["status"] == "stopped"
    assert config["message"].startswith("the browser session closed, so training stopped; ")


def test_two_sessions_train_at_once_under_the_default_cap_and_a_third_waits(dataset, monkeypatch):
    from dogvae import ui

    images, runs_dir = dataset
    monkeypatch.delenv("DOGVAE_MAX_TRAININGS", raising=False)
    assert ui.max_trainings() == 2  # SECURITY.md's default
    sessions = [train_page(images) for _ in range(3)]
    jobs = [start_long_training(app, f"user-{n}") for n, app in enumerate(sessions[:2])]
    try:
        for job in jobs:
            wait_for_batches(job)
        assert all(job.running for job in jobs)  # both at once, neither waiting for the other
        assert start_long_training(sessions[2], "user-2") is None
        assert any(
            "2 training(s) already running on this server" in error.value
            for error in sessions[2].error
        ), [error.value for error in sessions[2].error]
    finally:
        for job in jobs:
            job.stop()
        for job in jobs:
            job.wait(120)
    assert [job.status for job in jobs] == ["stopped", "stopped"], [job.message for job in jobs]
    assert [saved(runs_dir, f"user-{n}")["status"] for n in range(2)] == ["stopped", "stopped"]
    assert not (runs_dir / "user-2").exists()
    assert ui.training_slots(2).running == 0
