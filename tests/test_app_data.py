"""The Data page in AppTest: uploads, server datasets, the report and the preview."""

import io
import shutil
import zipfile

import numpy as np
import pytest

from tests.conftest import make_png, open_app, write_dogs


def metrics(app):
    return {metric.label: metric.value for metric in app.metric}


@pytest.fixture
def data_dir_with_dogs(app_dirs):
    """The app's data folder holding images/ (12 dogs) and a CSV listing them plus two bad rows."""
    data_dir, _ = app_dirs
    paths = write_dogs(data_dir / "images", 12)
    lines = ["filepaths,labels,data set"]
    lines += [
        f"{p.relative_to(data_dir).as_posix()},dog,{'valid' if i < 2 else 'train'}"
        for i, p in enumerate(paths)
    ]
    lines += ["images/missing.jpg,dog,train", "../outside.png,dog,train"]
    make_png(data_dir.parent / "outside.png")  # exists, but outside the data folder
    (data_dir / "dogs.csv").write_text("\n".join(lines) + "\n")
    return data_dir


def test_renders_without_a_dataset(app_dirs):
    app = open_app()
    assert app.title[0].value == "Data"
    assert any("No dataset loaded" in info.value for info in app.info)


def test_the_first_page_starts_the_warm_up_even_though_it_stops_early(app_dirs, monkeypatch):
    # The Data page without data ends with st.stop(), a new user's first page: the
    # warm-up (TensorFlow, the default model) must start all the same.
    from dogvae import ui

    started = []
    monkeypatch.setattr(ui, "warm_up", lambda: started.append(True))
    app = open_app()
    assert any("No dataset loaded" in info.value for info in app.info)
    assert started == [True]


def test_the_warm_up_loads_the_default_run_for_the_first_page_that_needs_it(
    runs_folder, monkeypatch
):
    from dogvae import loaded_run, ui
    from dogvae.config import ModelConfig
    from dogvae.model import build_decoder, build_encoder
    from tests.conftest import save_test_run

    run_dir = save_test_run(
        runs_folder / "first", build_encoder(ModelConfig()), build_decoder(ModelConfig())
    )
    monkeypatch.setenv("DOGVAE_DEFAULT_RUN", str(run_dir))
    ui._load_run.clear()
    loads = []
    real_load = loaded_run.load_run
    monkeypatch.setattr(loaded_run, "load_run", lambda path: loads.append(path) or real_load(path))
    ui.warm_up_work()
    assert loads == [str(run_dir.resolve())]
    app = open_app("generate")  # the page finds the model loaded
    assert app.title[0].value == "Generate" and app.image
    assert loads == [str(run_dir.resolve())]

    monkeypatch.setenv("DOGVAE_DEFAULT_RUN", str(runs_folder / "missing"))
    ui.warm_up_work()  # nothing to load: no error, nothing loaded
    (run_dir / "decoder.keras").write_bytes(b"damaged")
    (run_dir / "config.json").touch()
    monkeypatch.setenv("DOGVAE_DEFAULT_RUN", str(run_dir))
    ui.warm_up_work()  # a damaged default: left for the page to report
    assert len(loads) == 2


def test_uploaded_csv_is_reported_with_reasons_split_and_preview(data_dir_with_dogs):
    app = open_app()
    csv_bytes = (data_dir_with_dogs / "dogs.csv").read_bytes()
    app.file_uploader[0].upload("dogs.csv", csv_bytes, "text/csv")
    app.run()
    assert not app.exception
    assert metrics(app) == {
        "Rows": "14",
        "Files found": "12",
        "Readable images": "12",
        "Unreadable": "2",
    }
    unreadable = app.dataframe[0].value
    assert dict(zip(unreadable.path, unreadable.reason, strict=True)) == {
        "images/missing.jpg": "missing",
        "../outside.png": "outside the allowed folder",
    }
    assert any("10 training and 2 validation" in md.value for md in app.markdown)
    dataset = app.session_state["dataset"]
    assert dataset.images.shape == (12, 64, 64, 1) and dataset.images.dtype == np.uint8
    assert (
        len(app.image) == 1
        and "as the model sees them: 64x64 grayscale" in app.image[0].captions[0]
    )


def test_a_bad_upload_shows_an_error_and_keeps_the_previous_dataset(data_dir_with_dogs):
    app = open_app()
    app.file_uploader[0].upload("dogs.csv", (data_dir_with_dogs / "dogs.csv").read_bytes())
    app.run()
    before = app.session_state["dataset"]
    app.file_uploader[0].set_value(("bad.csv", b"path,label\na.png,x\n", "text/csv"))
    app.run()
    assert not app.exception
    assert any("filepaths" in error.value for error in app.error)
    assert app.session_state["dataset"] is before


def test_a_csv_with_no_readable_image_says_so(app_dirs):
    app = open_app()
    app.file_uploader[0].upload("x.csv", b"filepaths\nnope.png\nalso-nope.jpg\n", "text/csv")
    app.run()
    assert not app.exception
    assert any("Not a single image" in error.value for error in app.error)


def test_uploaded_zip(app_dirs, tmp_path):
    source = tmp_path / "zip_src"
    paths = write_dogs(source, 6)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in paths:
            archive.write(path, path.relative_to(source).as_posix())
        archive.writestr("../../evil.png", b"x")
    app = open_app()
    app.file_uploader[0].upload("dogs.zip", buffer.getvalue(), "application/zip")
    app.run()
    assert not app.exception
    assert metrics(app)["Readable images"] == "6"
    assert "outside the allowed folder" in set(app.dataframe[0].value.reason)


def test_server_datasets_are_offered_and_load(data_dir_with_dogs):
    shutil.copytree(data_dir_with_dogs / "images", data_dir_with_dogs / "folder_set")
    app = open_app()
    choice = next(box for box in app.selectbox if box.label == "Dataset on the server")
    assert [option.rstrip("/") for option in choice.options] == ["dogs.csv", "folder_set", "images"]
    choice.set_value(next(p for p in choice.options if "folder_set" in str(p)))
    next(button for button in app.button if button.label == "Load").click()
    app.run()
    assert not app.exception
    assert metrics(app)["Readable images"] == "12"


def test_rgb_setting_loads_three_channels(data_dir_with_dogs):
    app = open_app()
    next(radio for radio in app.radio if radio.label == "Colour").set_value("RGB")
    app.run()
    app.file_uploader[0].upload("dogs.csv", (data_dir_with_dogs / "dogs.csv").read_bytes())
    app.run()
    assert app.session_state["dataset"].images.shape[-1] == 3


def test_a_csv_from_a_windows_spreadsheet_loads_and_the_page_names_its_encoding(
    data_dir_with_dogs,
):
    make_png(data_dir_with_dogs / "images" / "chien_été.png")
    app = open_app()
    app.file_uploader[0].upload("dogs.csv", (data_dir_with_dogs / "dogs.csv").read_bytes())
    app.run()
    assert not any("Text encoding" in md.value for md in app.markdown)  # UTF-8: no line
    windows = "filepaths,labels\nimages/chien_été.png,bichon frisé\n".encode("cp1252")
    app.file_uploader[0].set_value(("chiens.csv", windows, "text/csv"))
    app.run()
    assert not app.exception
    assert metrics(app)["Readable images"] == "1"
    lines = [md.value for md in app.markdown if "Text encoding" in md.value]
    assert lines == ["**Text encoding:** the CSV was read as cp1252, not UTF-8."]
    assert app.session_state["dataset"].table["labels"][0] == "bichon frisé"


def test_the_same_zip_or_csv_uploaded_again_comes_from_the_cache(
    data_dir_with_dogs, tmp_path, monkeypatch
):
    from dogvae.data import decode, limits

    monkeypatch.setenv("DOGVAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(limits, "CACHE_SETTLE_SECONDS", 0.0)  # the dogs were written just now
    decoded = []
    real_decode = decode.decode_image
    monkeypatch.setattr(
        decode, "decode_image", lambda *args, **kw: decoded.append(1) or real_decode(*args, **kw)
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((data_dir_with_dogs / "images").rglob("*.*")):
            archive.write(path, path.relative_to(data_dir_with_dogs).as_posix())
    uploads = {
        "dogs.zip": buffer.getvalue(),
        "dogs.csv": (data_dir_with_dogs / "dogs.csv").read_bytes(),
    }
    for name, content in uploads.items():
        counts = []
        for _ in range(2):  # a new session each time: the user uploads the same file again
            app = open_app()
            app.file_uploader[0].upload(name, content)
            app.run()
            assert not app.exception
            assert metrics(app)["Readable images"] == "12"
            counts.append(len(decoded))
            decoded.clear()
        assert counts == [12, 0], name
