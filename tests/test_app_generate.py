"""AppTest for the Generate page: the sample grid, the latent sliders and their buttons.

Runs are saved once per module (untrained models, no training) and copied into
each test's own runs folder.

How images are compared: AppTest's media storage names every file after a hash
of its bytes, so an ``st.image``'s URL changes exactly when its encoded pixels
do (``image_urls``). Where a test needs the pixels themselves (sizes, downloads),
the ``media`` fixture records the bytes the page hands to Streamlit, by URL.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from dogvae import runs

APP = Path(__file__).parent.parent / "streamlit_app.py"
PAGE = "pages/generate.py"
SIDE = 64  # ModelConfig's default image size


def vivid_decoder(config):
    """An untrained decoder whose images differ visibly from one latent point to another.

    A freshly initialised decoder draws flat gray: every pixel within 1/255 of
    0.5. Its biases are zero and ReLU is scale-free, so four times every kernel
    multiplies the sigmoid's input by 4**4 and spreads the pixels over 0..255.
    """
    from dogvae.model import build_decoder

    decoder = build_decoder(config)
    decoder.set_weights([4.0 * weights for weights in decoder.get_weights()])
    return decoder


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory) -> Path:
    """Untrained seed-preset runs: "tiny" (latent 2) and "wide" (latent 12), each in its folder."""
    from dogvae.config import DataConfig, ModelConfig, TrainConfig
    from dogvae.model import build_encoder

    folder = tmp_path_factory.mktemp("saved")
    for name, latent_dim in (("tiny", 2), ("wide", 12)):
        config = ModelConfig(latent_dim=latent_dim)
        runs.save_run(
            folder / name / name,
            build_encoder(config),
            vivid_decoder(config),
            model_config=config,
            train_config=TrainConfig(epochs=1),
            data_config=DataConfig(),
            data={"source": "test", "readable": 1},
            history=[],
            preset="seed",
        )
    return folder


@pytest.fixture
def runs_folder(tmp_path, monkeypatch) -> Path:
    """An empty runs folder (and data folder) that the app uses."""
    folder = tmp_path / "runs"
    folder.mkdir()
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("DOGVAE_RUNS_DIR", str(folder))
    monkeypatch.setenv("DOGVAE_DATA_DIR", str(tmp_path / "data"))
    return folder


@pytest.fixture
def tiny_run(runs_folder, saved_runs) -> Path:
    shutil.copytree(saved_runs / "tiny", runs_folder, dirs_exist_ok=True)
    return runs_folder / "tiny"


@pytest.fixture
def wide_run(runs_folder, saved_runs) -> Path:
    shutil.copytree(saved_runs / "wide", runs_folder, dirs_exist_ok=True)
    return runs_folder / "wide"


@pytest.fixture
def media(monkeypatch) -> dict[str, tuple[bytes, str | None]]:
    """(bytes, file name) of every image and eager download the app registers, by URL."""
    files: dict[str, tuple[bytes, str | None]] = {}
    add = MediaFileManager.add

    def remember(self, path_or_data, mimetype, coordinates, file_name=None, **kwargs):
        url = add(self, path_or_data, mimetype, coordinates, file_name, **kwargs)
        files[url] = (path_or_data, file_name)
        return url

    monkeypatch.setattr(MediaFileManager, "add", remember)
    return files


def generate_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def image_urls(at: AppTest) -> list[str]:
    """The URL of every st.image on the page, in order: equal URLs mean equal images."""
    return [url for element in at.image for url in element.value]


def pixels(media, url: str) -> np.ndarray:
    data, _ = media[url]
    return np.asarray(Image.open(io.BytesIO(data)))


def slider_values(at: AppTest) -> list[float]:
    return [slider.value for slider in at.slider if slider.label.startswith("z")]


def test_without_a_model_the_page_says_so(runs_folder):
    at = generate_page()
    assert any("No model yet" in error.value for error in at.error)
    assert not at.image
    assert not at.slider


def test_grid_shows_count_samples_and_downloads_them(tiny_run, media):
    at = generate_page()
    grid_url = image_urls(at)[0]
    # 16 samples: a 4x4 grid with 2-pixel borders, enlarged twice.
    side = 4 * SIDE + 5 * 2
    assert pixels(media, grid_url).shape[:2] == (2 * side, 2 * side)

    download = at.download_button(key="generate-grid-download")
    data, file_name = media[download.proto.url]
    assert file_name == "tiny-samples-seed0.png"
    assert Image.open(io.BytesIO(data)).size == (side, side)

    at.slider(key="generate-count").set_value(4).run()
    assert not at.exception
    side = 2 * SIDE + 3 * 2
    assert pixels(media, image_urls(at)[0]).shape[:2] == (2 * side, 2 * side)


def test_seed_and_resample_change_the_grid_only(tiny_run):
    at = generate_page()
    grid_url, point_url = image_urls(at)

    at.number_input(key="generate-seed").set_value(5).run()
    assert not at.exception
    seed5_url, seed5_point_url = image_urls(at)
    assert seed5_url != grid_url
    assert seed5_point_url == point_url

    at.button[0].click().run()  # Resample
    assert not at.exception
    assert at.button[0].label == "Resample"
    assert at.number_input(key="generate-seed").value != 5
    assert image_urls(at)[0] != seed5_url

    at.number_input(key="generate-seed").set_value(0).run()
    assert image_urls(at)[0] == grid_url


def test_moving_a_slider_changes_the_decoded_image(tiny_run):
    at = generate_page()
    assert [slider.label for slider in at.slider if slider.label.startswith("z")] == ["z1", "z2"]
    grid_url, point_url = image_urls(at)

    at.slider(key="generate-tiny-z1").set_value(1.5).run()
    assert not at.exception
    moved_grid_url, moved_point_url = image_urls(at)
    assert moved_point_url != point_url
    assert moved_grid_url == grid_url


def test_random_point_then_reset(wide_run):
    at = generate_page()
    _, origin_url = image_urls(at)
    assert slider_values(at) == [0.0] * 8

    next(button for button in at.button if button.label == "Random point").click().run()
    assert not at.exception
    values = slider_values(at)
    assert any(values)  # eight exact zeros from a normal distribution do not happen
    assert all(-3.0 <= value <= 3.0 for value in values)
    assert np.allclose(np.round(np.array(values) / 0.05) * 0.05, values)
    assert image_urls(at)[1] != origin_url

    next(button for button in at.button if button.label == "Reset").click().run()
    assert not at.exception
    assert slider_values(at) == [0.0] * 8
    assert image_urls(at)[1] == origin_url


def test_a_wide_latent_shows_eight_sliders(wide_run):
    at = generate_page()
    assert [slider.label for slider in at.slider if slider.label.startswith("z")] == [
        f"z{index}" for index in range(1, 9)
    ]
    assert any("12 latent dimensions" in caption.value for caption in at.caption)


def test_point_download_is_the_shown_point(tiny_run, media):
    at = generate_page()
    at.slider(key="generate-tiny-z2").set_value(-1.0).run()
    data, file_name = media[at.download_button(key="generate-point-download").proto.url]
    assert file_name == "tiny-point.png"
    downloaded = np.asarray(Image.open(io.BytesIO(data)))
    assert downloaded.shape == (SIDE, SIDE)  # grayscale, at the model's size
    # The large view is the same image, each pixel repeated 4x4.
    shown = pixels(media, image_urls(at)[1])
    assert shown.shape == (4 * SIDE, 4 * SIDE)
    assert np.abs(shown[::4, ::4].astype(int) - downloaded).max() <= 2  # st.image sends JPEG


def test_sliders_survive_a_page_switch_but_not_a_model_switch(tiny_run, saved_runs, runs_folder):
    at = generate_page()
    at.slider(key="generate-tiny-z1").set_value(1.5).run()
    at.switch_page("pages/data.py").run()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert at.slider(key="generate-tiny-z1").value == 1.5

    shutil.copytree(saved_runs / "wide", runs_folder, dirs_exist_ok=True)
    at.session_state["active_run"] = str(runs_folder / "wide")
    at.run()
    assert not at.exception
    assert slider_values(at) == [0.0] * 8
