"""The Train page in AppTest: the form, a real short training through TrainingJob, Stop."""

import json
import time

import numpy as np
import pytest

from dogvae.config import PRESETS
from tests.conftest import open_app, save_test_run


def fill(app, *, epochs=1, batch_size=8, name="tiny-run", **more):
    number = {box.label: box for box in app.number_input}
    number["Epochs"].set_value(epochs)
    number["Batch size"].set_value(batch_size)
    if "budget" in more:
        number["Time budget (minutes)"].set_value(more["budget"])
    if "warmup" in more:
        number["KL warm-up epochs"].set_value(more["warmup"])
    if "schedule" in more:
        next(box for box in app.selectbox if box.label == "Learning-rate schedule").set_value(
            more["schedule"]
        )
    if "tensorboard" in more:
        next(box for box in app.checkbox if box.label == "Write TensorBoard logs").set_value(
            more["tensorboard"]
        )
    app.text_input(key="run_name").set_value(name)
    next(b for b in app.button if b.label == "Start training").click()
    app.run()
    assert not app.exception, app.exception


def wait_for(job, seconds=120):
    deadline = time.monotonic() + seconds
    while job.running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not job.running, "training did not end in time"


def test_without_a_dataset_the_page_says_where_to_get_one(app_dirs):
    app = open_app("train")
    assert any("Load a dataset on the Data page" in info.value for info in app.info)


def test_a_short_training_ends_in_a_saved_active_run(train_app):
    app, runs_dir = train_app
    fill(app, epochs=2)
    job = app.session_state["training_job"]
    assert job.running or job.status == "finished"
    app.run()  # the running view: progress, Stop button, chart
    assert not app.exception
    wait_for(job)
    assert job.status == "finished", job.message
    app.run()
    assert not app.exception
    assert any("Training finished" in s.value and "tiny-run" in s.value for s in app.success)
    assert (runs_dir / "tiny-run" / "encoder.h5").is_file()
    assert app.session_state["active_run"] == str(runs_dir / "tiny-run")
    assert len(job.epochs()) == 2 and job.epochs()[-1]["samples"].shape == (16, 64, 64, 1)
    assert app.image, "the sample grid is shown"
    assert [s.label for s in app.slider] == ["Samples after epoch"]
    shown = [md.value for md in app.markdown] + [w.value for w in app.warning]
    assert any("latent units active" in text for text in shown)


def test_tensorboard_logs_go_into_a_folder_named_after_the_run(train_app, tmp_path, monkeypatch):
    monkeypatch.setenv("DOGVAE_TENSORBOARD_DIR", str(tmp_path / "tb"))
    app, _ = train_app
    fill(app, epochs=1, name="logged", tensorboard=True)
    job = app.session_state["training_job"]
    wait_for(job)
    assert job.status == "finished", job.message
    assert list((tmp_path / "tb" / "logged" / "train").glob("events.out.tfevents.*"))
    app.run()
    assert f"TensorBoard logs: `{tmp_path / 'tb' / 'logged'}`" in [c.value for c in app.caption]
    fill(app, epochs=1, name="unlogged", tensorboard=False)  # the box stays as it was left
    wait_for(app.session_state["training_job"])
    assert sorted(path.name for path in (tmp_path / "tb").iterdir()) == ["logged"]


def test_schedule_warm_up_and_time_budget_reach_the_training(train_app):
    app, runs_dir = train_app
    preset = next(box for box in app.selectbox if box.label == "Preset")
    preset.set_value("quality").run()
    schedule = next(box for box in app.selectbox if box.label == "Learning-rate schedule")
    assert schedule.value == "cosine"  # the preset's own
    fill(app, epochs=2, budget=0.5, warmup=1, schedule="constant", name="budgeted")
    job = app.session_state["training_job"]
    wait_for(job)
    assert job.status == "finished", job.message
    config = job.train_config
    assert (config.budget_minutes, config.kl_warmup_epochs, config.lr_schedule) == (
        0.5,
        1,
        "constant",
    )
    assert [row["kl_weight"] for row in job.epochs()] == [0.0, 1.0]
    saved = json.loads((runs_dir / "budgeted" / "config.json").read_text())["train"]
    assert saved["budget_minutes"] == 0.5 and saved["lr_schedule"] == "constant"


def test_a_zero_budget_means_no_limit(train_app):
    app, _ = train_app
    fill(app, epochs=1, name="unlimited")
    job = app.session_state["training_job"]
    wait_for(job)
    assert job.train_config.budget_minutes is None


def test_stop_ends_training_and_still_saves(train_app):
    app, runs_dir = train_app
    fill(app, epochs=5000, batch_size=4, name="long-run")
    job = app.session_state["training_job"]
    while job.last_batch() is None and job.running:
        time.sleep(0.05)
    app.run()
    stop = next(b for b in app.button if b.label == "Stop")
    stop.click()
    app.run()
    wait_for(job, 60)
    assert job.status == "stopped"
    app.run()
    assert not app.exception
    assert any("ended early" in w.value and "long-run" in w.value for w in app.warning)
    assert (runs_dir / "long-run" / "config.json").is_file()


@pytest.mark.parametrize(
    "name, message",
    [("../escape", "Run names use letters"), ("", "Run names use letters")],
)
def test_bad_run_names_are_refused(train_app, name, message):
    app, runs_dir = train_app
    fill(app, name=name)
    assert any(message in error.value for error in app.error)
    assert "training_job" not in app.session_state
    assert list(runs_dir.iterdir()) == []


def test_an_existing_run_is_never_overwritten(train_app):
    app, runs_dir = train_app
    (runs_dir / "taken").mkdir()
    (runs_dir / "taken" / "config.json").write_text("{}")
    fill(app, name="taken")
    assert any("already exists" in error.value for error in app.error)
    assert (runs_dir / "taken" / "config.json").read_text() == "{}"


def test_the_server_wide_limit_gives_a_clear_message(train_app, monkeypatch):
    from dogvae import ui

    monkeypatch.setenv("DOGVAE_MAX_TRAININGS", "1")
    slots = ui.training_slots(1)
    slots.acquire()  # another session is training
    try:
        app, _ = train_app
        fill(app, name="second")
        assert any("already running on this server" in error.value for error in app.error)
    finally:
        slots.release()


@pytest.fixture
def seed_default_run(tmp_path, monkeypatch):
    """A saved (untrained) seed-preset run set as the default model, and its weights."""
    from dogvae.config import PRESETS
    from dogvae.model import build_decoder, build_encoder

    config = PRESETS["seed"].model
    encoder, decoder = build_encoder(config), build_decoder(config)
    path = save_test_run(tmp_path / "default", encoder, decoder, config)
    monkeypatch.setenv("DOGVAE_DEFAULT_RUN", str(path))
    return path, encoder.get_weights() + decoder.get_weights()


def test_training_can_start_from_the_default_model(seed_default_run, train_app):
    default, weights = seed_default_run
    app, runs_dir = train_app
    app.checkbox[0].check()
    assert app.checkbox[0].label == "Start from the pretrained default model"
    fill(app, epochs=1, name="fine-tuned")
    job = app.session_state["training_job"]
    wait_for(job)
    assert job.status == "finished", job.message
    started_from = job.initial_weights[0] + job.initial_weights[1]
    assert all(np.array_equal(a, b) for a, b in zip(started_from, weights, strict=True))
    assert job.train_config.kl_warmup_epochs == 0
    saved = json.loads((runs_dir / "fine-tuned" / "config.json").read_text())
    assert saved["init_from"]["run"] == str(default)

    # The sidebar named the default model as active; once the new run is, it names that one
    # in the same script run as the message, not only on the next page.
    app.run()
    assert any("now the active model" in box.value for box in app.success)
    assert "**fine-tuned**" in [markdown.value for markdown in app.sidebar.markdown]


def test_the_default_model_is_offered_only_for_its_own_architecture(seed_default_run, train_app):
    app, _ = train_app
    labels = ["Start from the pretrained default model", "Write TensorBoard logs"]
    assert [box.label for box in app.checkbox] == labels
    next(box for box in app.selectbox if box.label == "Preset").set_value("quality").run()
    assert [box.label for box in app.checkbox] == labels[1:]  # its weights would not fit

    next(box for box in app.selectbox if box.label == "Preset").set_value("seed").run()
    app.checkbox[0].check()
    latent = next(box for box in app.number_input if box.label == "Latent size")
    latent.set_value(8)
    fill(app, epochs=1, name="other-latent")
    assert any("only be a starting point" in error.value for error in app.error)
    assert "training_job" not in app.session_state


def test_the_mean_weight_is_offered_for_the_ar_preset_and_reaches_the_training(train_app):
    app, _ = train_app
    assert "Mean weight" not in [box.label for box in app.number_input]  # the seed preset
    next(box for box in app.selectbox if box.label == "Preset").set_value("quality-ar").run()
    weight = next(box for box in app.number_input if box.label == "Mean weight")
    assert weight.value == PRESETS["quality-ar"].train.mean_weight  # the preset's own
    weight.set_value(2.5)
    term = next(box for box in app.selectbox if box.label == "Mean term")
    assert term.value == PRESETS["quality-ar"].train.mean_term
    other = next(choice for choice in term.options if choice != term.value)
    term.set_value(other)
    fill(app, epochs=1, name="weighted")
    job = app.session_state["training_job"]
    try:
        assert job.train_config.mean_weight == 2.5
        assert job.train_config.mean_term == other
    finally:
        job.stop()
        wait_for(job)
