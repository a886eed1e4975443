"""Server limits, and bad input while a training runs: nothing the user had is touched."""

import tomllib
from pathlib import Path

from dogvae import ui
from tests.conftest import open_app

REPO = Path(__file__).resolve().parents[1]


def test_server_config_limits_uploads_and_keeps_xsrf_protection():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["enableXsrfProtection"] is True
    assert 0 < config["server"]["maxUploadSize"] <= 200
    assert config["client"]["showErrorDetails"] == "none"  # no tracebacks for users
    assert config["runner"]["postScriptGC"] is False  # see test_a_rerun_leaves_keras_alone


def test_a_rerun_leaves_keras_alone_and_still_closes_figures(monkeypatch):
    """Streamlit resets Keras after every script run (a full collection and
    TensorFlow's kernel cache cleared), which made a training watched on the
    Train page many times slower; dogvae.ui turns that off and keeps the figure clean-up."""
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    resets = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: resets.append(a))
    assert ui.keep_keras_between_runs()
    plt.figure()
    app = open_app("train")
    app.run()
    assert resets == []
    assert plt.get_fignums() == []


def test_the_figure_clean_up_skips_a_pyplot_still_being_imported(monkeypatch):
    """The warm-up thread may be importing pyplot when a run ends: no error in the log."""
    import sys
    import types

    from streamlit.runtime.scriptrunner import script_runner

    assert ui.keep_keras_between_runs()
    half_imported = types.ModuleType("matplotlib.pyplot")  # no ``close`` yet
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", half_imported)
    script_runner._clean_problem_modules()  # raised AttributeError before


def test_streamlit_cleanup_comes_back_on_request(monkeypatch):
    """DOGVAE_STREAMLIT_CLEANUP=1 (bench/train_in_app.py's yardstick) keeps Streamlit's reset."""
    import keras
    from streamlit.runtime.scriptrunner import script_runner

    resets = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: resets.append(a))
    patched = script_runner._clean_problem_modules
    original = patched.replaces
    monkeypatch.setattr(script_runner, "_clean_problem_modules", original)
    monkeypatch.setenv("DOGVAE_STREAMLIT_CLEANUP", "1")
    assert not ui.keep_keras_between_runs()
    open_app()
    assert resets  # Streamlit's own clean-up ran after the script
    monkeypatch.delenv("DOGVAE_STREAMLIT_CLEANUP")
    assert ui.keep_keras_between_runs()
    assert script_runner._clean_problem_modules is not original
    assert script_runner._clean_problem_modules.keeps_keras


def uploaders(app):
    return {uploader.label: uploader.proto.max_upload_size_mb for uploader in app.file_uploader}


def test_every_uploader_has_its_own_limit(app_dirs, monkeypatch):
    monkeypatch.delenv("DOGVAE_DEFAULT_RUN")  # the shipped model, so every page renders fully
    assert uploaders(open_app()) == {"Dataset (CSV or ZIP)": ui.DATASET_UPLOAD_MB}
    assert uploaders(open_app("generate")) == {"Encode your photo": ui.PHOTO_UPLOAD_MB}
    app = open_app("interpolate")
    for side in ("start", "end"):
        app.segmented_control(key=f"interpolate-{side}-source").set_value("Uploaded photo")
    app.run()
    limits = [uploader.proto.max_upload_size_mb for uploader in app.file_uploader]
    assert limits == [ui.PHOTO_UPLOAD_MB, ui.PHOTO_UPLOAD_MB]


def test_bad_uploads_during_a_training_leave_it_and_the_active_model_alone(train_app):
    app, runs_dir = train_app
    numbers = {box.label: box for box in app.number_input}
    numbers["Epochs"].set_value(5000)
    numbers["Batch size"].set_value(4)
    app.text_input(key="run_name").set_value("busy")
    next(b for b in app.button if b.label == "Start training").click()
    app.run()
    job = app.session_state["training_job"]
    active = app.session_state.get("active_run")
    dataset = app.session_state["dataset"]
    try:
        app.switch_page("pages/data.py").run()
        for name, content in [
            ("bad.csv", b"\xff\xfe\x00not utf-8"),
            ("x.csv", b"path\na.png\n"),
            ("empty.csv", b""),
            ("bomb.zip", b"PK\x03\x04garbage"),
        ]:
            app.file_uploader[0].set_value((name, content, "application/octet-stream"))
            app.run()
            assert not app.exception and app.error, name
            assert job.running, f"{name} disturbed the training"
            assert app.session_state["dataset"] is dataset
            assert app.session_state.get("active_run") == active
    finally:
        job.stop()
        assert job.wait(60)
    assert job.status == "stopped" and (runs_dir / "busy" / "config.json").is_file()
