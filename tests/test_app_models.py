"""AppTest for the Models page: listing, picking, downloading and deleting saved runs.

Two runs are saved once per module (untrained models, no training) and copied
into each test's own runs folder.
"""

from __future__ import annotations

import gc
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from dogvae import runs

APP = Path(__file__).parent.parent / "streamlit_app.py"
HISTORY = [
    {
        "epoch": epoch,
        "batches": 1,
        "loss": loss,
        "reconstruction": loss - 1.0,
        "kl": 1.0,
        "val_loss": loss + 2.0,
        "val_reconstruction": loss + 1.0,
        "val_kl": 1.0,
        "seconds": 0.25,
    }
    for epoch, loss in ((1, 300.0), (2, 250.0))
]


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory) -> Path:
    """A folder with two runs, "alpha" saved before "beta" (so "beta" is the newest)."""
    from dogvae.config import DataConfig, ModelConfig, TrainConfig
    from dogvae.model import build_decoder, build_encoder

    folder = tmp_path_factory.mktemp("saved") / "runs"
    encoder, decoder = build_encoder(ModelConfig()), build_decoder(ModelConfig())
    for name in ("alpha", "beta"):
        runs.save_run(
            folder / name,
            encoder,
            decoder,
            model_config=ModelConfig(),
            # alpha fine-tuned another run with a cosine schedule, flips and shifts; beta
            # is plain
            train_config=TrainConfig(epochs=2, lr_schedule="cosine", flip=True, shift=2)
            if name == "alpha"
            else TrainConfig(epochs=2),
            data_config=DataConfig(),
            data={"source": "dogs.csv", "readable": 20, "train": 18, "validation": 2},
            history=HISTORY,
            preset="seed",
            init_from={"run": "/models/default"} if name == "alpha" else None,
        )
    config_path = folder / "alpha" / "config.json"
    config = json.loads(config_path.read_text())
    config["created"] = "2024-01-01T00:00:00+00:00"  # saved in the same second as beta otherwise
    config_path.write_text(json.dumps(config))
    # Streamlit collects garbage after every rerun; with TensorFlow loaded that
    # walk made each AppTest run 0.6 s instead of 0.1 s (see STYLE.md).
    gc.freeze()
    return folder


@pytest.fixture
def two_runs(runs_folder, saved_runs) -> Path:
    shutil.copytree(saved_runs, runs_folder, dirs_exist_ok=True)
    return runs_folder


def run(target) -> AppTest:
    """Run the app (an AppTest, or a widget after click()) and check that nothing raised."""
    at = target.run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def models_page() -> AppTest:
    at = run(AppTest.from_file(str(APP), default_timeout=60))
    at.switch_page("pages/models.py")
    return run(at)


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def test_without_runs_says_how_to_get_one(runs_folder):
    at = models_page()
    assert at.title[0].value == "Models"
    assert str(runs_folder) in texts(at.caption)
    assert "Train" in texts(at.info)
    assert not at.dataframe


def test_lists_both_runs_newest_first_and_marks_the_active_one(two_runs):
    at = models_page()
    table = at.dataframe[0].value
    assert list(table["run"]) == ["beta", "alpha"]
    assert list(table["active"]) == [True, False]
    assert list(table["images"]) == [20, 20]
    assert list(table["val loss"]) == [252.0, 252.0]
    headers = [header.value for header in at.subheader]
    assert headers == ["beta :green-badge[active]", "alpha"]
    assert "latent size **2**" in texts(at.markdown)
    assert "Trained on 18 images, validated on 2 from `dogs.csv`." in texts(at.markdown)
    beta, alpha = [text.value for text in at.markdown if "Preset **seed**" in text.value]
    assert alpha.endswith(
        "learning rate 0.001 (cosine) · mirrored images · images moved up to 2 px · "
        "continued from `default`"
    )
    assert beta.endswith("learning rate 0.001")
    assert len(at.get("vega_lite_chart")) == 2
    assert at.button(key="activate-beta").disabled
    assert not at.button(key="activate-alpha").disabled


def loss_chart_axis(at: AppTest, index: int = 0) -> list[float]:
    spec = json.loads(at.get("vega_lite_chart")[index].proto.spec)
    return spec["encoding"]["y"]["scale"]["domain"]


def test_the_loss_axis_starts_where_the_curve_is(two_runs):
    # Two epochs: both shown, on an axis around them rather than from 0.
    at = models_page()
    low, high = loss_chart_axis(at)
    assert 240 < low < 250 and 302 < high < 310
    assert not any("above the chart" in text for text in texts(at.caption))

    # A first epoch far above the rest (as the default model's 7,801 before 2,600 ... 2,400):
    # the axis follows the later epochs, and a line says where epoch 1 went.
    losses = [7801.0, 2600.0, 2544.0, 2528.0, 2500.0, 2450.0]
    history = [
        {**HISTORY[0], "epoch": epoch, "loss": loss, "val_loss": loss - 20.0}
        for epoch, loss in enumerate(losses, start=1)
    ]
    (two_runs / "beta" / "history.csv").write_text(
        "epoch,loss,val_loss\n"
        + "".join(f"{row['epoch']},{row['loss']},{row['val_loss']}\n" for row in history)
    )
    at = models_page()
    low, high = loss_chart_axis(at)
    assert 2350 < low < 2430 and 2600 < high < 2700
    assert "Epoch 1 (7,801.0) is above the chart, so that the learning after it shows." in texts(
        at.caption
    )


def test_make_active_sets_the_session_run(two_runs):
    at = models_page()
    run(at.button(key="activate-alpha").click())
    assert at.session_state["active_run"] == str(two_runs / "alpha")
    assert at.button(key="activate-alpha").disabled
    assert list(at.dataframe[0].value["active"]) == [False, True]


def test_delete_happens_only_after_confirmation(two_runs):
    at = models_page()
    run(at.button(key="delete-alpha").click())
    assert (two_runs / "alpha").is_dir()
    assert "Delete run **alpha**? This cannot be undone." in texts(at.warning)

    run(at.button(key="cancel-delete-alpha").click())
    assert (two_runs / "alpha").is_dir()
    assert not at.warning

    run(at.button(key="delete-alpha").click())
    run(at.button(key="confirm-delete-alpha").click())
    assert not (two_runs / "alpha").exists()
    assert list(at.dataframe[0].value["run"]) == ["beta"]
    assert "Deleted run alpha." in texts(at.success)


def test_deleting_the_active_run_falls_back_to_the_newest(two_runs):
    at = models_page()
    run(at.button(key="activate-alpha").click())
    run(at.button(key="delete-alpha").click())
    run(at.button(key="confirm-delete-alpha").click())
    assert at.session_state["active_run"] == str(two_runs / "beta")
    assert at.subheader[0].value == "beta :green-badge[active]"


def test_a_failed_delete_is_explained_and_the_page_keeps_working(two_runs, monkeypatch):
    def refuse(run_dir):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(runs, "delete_run", refuse)
    at = models_page()
    run(at.button(key="delete-alpha").click())
    run(at.button(key="confirm-delete-alpha").click())
    assert "Could not delete alpha" in texts(at.error)
    assert list(at.dataframe[0].value["run"]) == ["beta", "alpha"]
    run(at.button(key="activate-alpha").click())
    assert at.session_state["active_run"] == str(two_runs / "alpha")


def test_broken_folders_are_reported_next_to_the_good_runs(two_runs):
    shutil.rmtree(two_runs / "beta")
    (two_runs / "bogus").mkdir()
    (two_runs / "bogus" / "config.json").write_text('{"hello": "world"}')
    (two_runs / "garbage").mkdir()
    (two_runs / "garbage" / "config.json").write_bytes(b"\x00\xff not json")
    at = models_page()
    warnings = [warning.value for warning in at.warning]
    assert len(warnings) == 2
    assert "Skipped the folder `bogus`" in warnings[0] and "not a dogvae run" in warnings[0]
    assert "Skipped the folder `garbage`" in warnings[1] and "damaged" in warnings[1]
    assert "by hand" in warnings[0]
    assert list(at.dataframe[0].value["run"]) == ["alpha"]


def test_stopped_run_without_history_says_so(two_runs):
    config_path = two_runs / "alpha" / "config.json"
    config = json.loads(config_path.read_text())
    config |= {"status": "stopped", "message": "stopped by the user at epoch 1, batch 1."}
    config_path.write_text(json.dumps(config))
    (two_runs / "alpha" / "history.csv").unlink()
    at = models_page()
    assert "Stopped before the last epoch: stopped by the user" in texts(at.warning)
    assert "No loss history was saved with this run." in texts(at.caption)
    assert len(at.get("vega_lite_chart")) == 1


def test_zip_is_made_only_when_downloaded(two_runs, monkeypatch):
    downloads = {}
    register = MediaFileManager.add_deferred

    def remember(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        downloads[file_name] = (data_callable, mimetype)
        return register(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    zipped = []
    zip_run = runs.zip_run
    monkeypatch.setattr(MediaFileManager, "add_deferred", remember)
    monkeypatch.setattr(runs, "zip_run", lambda path: zipped.append(path) or zip_run(path))

    at = models_page()
    labels = [button.label for button in at.download_button]
    assert labels == ["Download ZIP", "Download decoder (ONNX)"] * 2
    assert sorted(downloads) == ["alpha-decoder.zip", "alpha.zip", "beta-decoder.zip", "beta.zip"]
    assert zipped == []

    make_zip, mimetype = downloads["alpha.zip"]
    assert mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(make_zip())) as archive:
        assert "alpha/config.json" in archive.namelist()
        assert "alpha/encoder.keras" in archive.namelist()
    assert zipped == [two_runs / "alpha"]


def test_the_decoder_export_is_a_download_made_only_when_clicked(two_runs, monkeypatch):
    from dogvae import export

    downloads = {}
    register = MediaFileManager.add_deferred

    def remember(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        downloads[file_name] = data_callable
        return register(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    exported = []
    export_zip = export.export_zip
    monkeypatch.setattr(MediaFileManager, "add_deferred", remember)
    monkeypatch.setattr(
        export, "export_zip", lambda path: exported.append(path) or export_zip(path)
    )
    models_page()
    assert exported == []
    with zipfile.ZipFile(io.BytesIO(downloads["beta-decoder.zip"]())) as archive:
        assert sorted(archive.namelist()) == [
            "beta-decoder/decoder.onnx",
            "beta-decoder/export.json",
        ]
        info = json.loads(archive.read("beta-decoder/export.json"))
    assert exported == [two_runs / "beta"]
    assert info["format"] == "dogvae-decoder-onnx" and info["latent_dim"] == 2


def test_page_does_not_load_tensorflow(two_runs):
    script = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(APP)!r}, default_timeout=60).run()\n"
        "at.switch_page('pages/models.py').run()\n"
        "assert not at.exception and at.dataframe, 'the page did not render'\n"
        "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))\n"
    )
    # Without the app's background warm-up, which imports TensorFlow on purpose.
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "DOGVAE_WARM_UP": "0"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
