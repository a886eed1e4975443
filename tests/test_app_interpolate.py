"""AppTest for the Interpolate page: endpoints, the strip, the animation (played in the
browser, or the server's frame viewer) and the downloads.

One untrained seed-preset run is saved once per module and copied into each
test's own runs folder.

How images are compared: AppTest's media storage names every file after a hash
of its bytes, so an ``st.image``'s URL changes exactly when its encoded pixels
do. Where a test needs the pixels themselves, the ``media`` fixture records the
bytes the page hands to Streamlit, by URL, and the deferred downloads (the GIF)
as callables, by file name.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset, save_test_run, vivid_decoder
from PIL import Image
from streamlit.testing.v1 import AppTest

from dogvae.data import Dataset

APP = Path(__file__).parent.parent / "streamlit_app.py"
PAGE = "pages/interpolate.py"
SIDE = 64  # ModelConfig's default image size
PAD = 2  # images.image_strip's default border


@pytest.fixture(autouse=True)
def server_path(monkeypatch):
    """Today's path, the frame viewer drawn by the server; the browser player's tests undo it."""
    monkeypatch.setenv("DOGVAE_BROWSER_DECODER", "0")


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """An untrained seed-preset run called "tiny"."""
    from dogvae.config import ModelConfig
    from dogvae.model import build_encoder

    folder = tmp_path_factory.mktemp("saved") / "tiny"
    save_test_run(folder, build_encoder(ModelConfig()), vivid_decoder(ModelConfig()))
    return folder


@pytest.fixture
def tiny_run(runs_folder, saved_run) -> Path:
    shutil.copytree(saved_run, runs_folder / "tiny")
    return runs_folder / "tiny"


def interpolate_page(dataset: Dataset | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    if dataset is not None:
        at.session_state["dataset"] = dataset
    at.run()
    assert not at.exception
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def image_url(at: AppTest, caption: str) -> str:
    """The URL of the st.image whose caption starts with ``caption``: equal URLs, equal images."""
    (url,) = [
        url
        for element in at.image
        for url, text in zip(element.value, element.captions, strict=True)
        if text.startswith(caption)
    ]
    return url


def pixels(media: dict, url: str) -> np.ndarray:
    data, _ = media[url]
    return np.asarray(Image.open(io.BytesIO(data)))


def random_dataset(count: int = 3, side: int = SIDE, channels: int = 1) -> Dataset:
    """``count`` noise images, all for training."""
    rng = np.random.default_rng(0)
    return make_dataset(rng.integers(0, 256, (count, side, side, channels), dtype=np.uint8))


def png(side: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), 180, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_without_a_model_the_page_says_so(runs_folder):
    at = interpolate_page()
    assert any("No model yet" in error.value for error in at.error)
    assert not at.image


@pytest.mark.parametrize("with_log_vars", [True, False], ids=["near-training-dogs", "older-run"])
def test_random_ends_are_drawn_like_the_training_dogs_when_the_run_knows_them(
    runs_folder, media, with_log_vars
):
    from dogvae import images, latent, samplers
    from dogvae.config import ModelConfig
    from dogvae.model import build_encoder, decode

    decoder = vivid_decoder(ModelConfig())
    rng = np.random.default_rng(0)
    means = rng.normal(3.0, 0.5, (100, 2))
    stats = latent.latent_statistics(
        means, rng.uniform(-3, -1, means.shape) if with_log_vars else None
    )
    save_test_run(runs_folder / "known", build_encoder(ModelConfig()), decoder, latent_stats=stats)
    at = interpolate_page()
    shown = pixels(media, image_url(at, "Seed 1"))[::2, ::2]
    sample = samplers.sample_near_data if with_log_vars else samplers.sample_like_data
    expected = images.to_uint8(decode(decoder, sample(1, stats, 1)))[0, ..., 0]
    assert np.array_equal(shown, expected)
    from_prior = images.to_uint8(decode(decoder, samplers.sample_latents(1, 2, 1)))[0, ..., 0]
    assert not np.array_equal(shown, from_prior)


def test_strip_frames_and_downloads_follow_the_steps(tiny_run, media):
    at = interpolate_page()
    assert image_url(at, "Seed 1") != image_url(at, "Seed 2")
    assert at.slider(key="interpolate-frame").max == 8

    at.slider(key="interpolate-steps").set_value(5).run()
    assert not at.exception
    assert at.slider(key="interpolate-frame").max == 5
    # images.image_strip: 5 images in a row with 2-pixel borders, enlarged twice.
    strip = pixels(media, image_url(at, "5 steps, slerp"))
    assert strip.shape[:2] == (2 * (SIDE + 2 * PAD), 2 * (5 * SIDE + 6 * PAD))

    data, file_name = media[at.download_button(key="interpolate-png-download").proto.url]
    assert file_name == "tiny-interpolation.png"
    assert Image.open(io.BytesIO(data)).size == (5 * SIDE + 6 * PAD, SIDE + 2 * PAD)

    gif = Image.open(io.BytesIO(media["tiny-interpolation.gif"]()))
    assert gif.n_frames == 2 * 5 - 2  # forwards, then backwards without repeating the ends
    assert gif.size == (4 * SIDE, 4 * SIDE)


def test_frame_slider_shows_that_frame(tiny_run):
    at = interpolate_page()
    first = image_url(at, "Frame 1 of 8")
    at.slider(key="interpolate-frame").set_value(8).run()
    assert not at.exception
    assert image_url(at, "Frame 8 of 8") != first


def test_linear_method_gives_another_path(tiny_run):
    at = interpolate_page()
    slerp = image_url(at, "8 steps, slerp")
    at.radio(key="interpolate-method").set_value("linear").run()
    assert not at.exception
    assert image_url(at, "8 steps, linear") != slerp


def test_changing_a_seed_changes_that_end(tiny_run):
    at = interpolate_page()
    start, end = image_url(at, "Seed 1"), image_url(at, "Seed 2")
    at.number_input(key="interpolate-start-seed").set_value(7).run()
    assert not at.exception
    # The image, not only its caption: a page that ignored the Seed box would relabel
    # the same dog "Seed 7".
    assert image_url(at, "Seed 7") != start, "the start's image did not follow its seed"
    assert image_url(at, "Seed 2") == end
    at.number_input(key="interpolate-start-seed").set_value(1).run()
    assert image_url(at, "Seed 1") == start  # the seed alone decides the point


def test_missing_upload_asks_for_one_and_the_page_still_works(tiny_run):
    at = interpolate_page()
    at.segmented_control(key="interpolate-end-source").set_value("Uploaded photo").run()
    assert not at.exception
    messages = [info.value for info in at.info]
    assert any("Upload a photo" in message and "end" in message for message in messages)
    assert any("Choose both ends" in message for message in messages)
    assert not at.download_button
    at.slider(key="interpolate-steps").set_value(4).run()
    assert not at.exception


def test_uploaded_non_image_is_refused_and_a_photo_is_used(tiny_run):
    at = interpolate_page()
    at.segmented_control(key="interpolate-start-source").set_value("Uploaded photo").run()
    at.file_uploader(key="interpolate-start-upload").upload(
        "notes.png", b"this is not a picture of a dog", "image/png"
    )
    at.run()
    assert not at.exception
    assert any("That file is not a usable image" in error.value for error in at.error)
    assert not at.download_button

    at.file_uploader(key="interpolate-start-upload").set_value(("dog.png", png(), "image/png"))
    at.run()
    assert not at.exception
    assert not at.error
    assert image_url(at, "dog.png")
    assert at.slider(key="interpolate-frame").max == 8


def test_dataset_image_as_an_end(tiny_run):
    at = interpolate_page(random_dataset(count=3))
    at.segmented_control(key="interpolate-start-source").set_value("Dataset image").run()
    assert not at.exception
    index = at.number_input(key="interpolate-start-index-3")
    assert (index.min, index.max) == (0, 2)
    first = image_url(at, "Dataset image 0")
    strip = image_url(at, "8 steps, slerp")

    index.set_value(2).run()
    assert not at.exception
    assert image_url(at, "Dataset image 2") != first
    assert image_url(at, "8 steps, slerp") != strip


def test_dataset_image_needs_a_matching_dataset(tiny_run):
    at = interpolate_page()
    at.segmented_control(key="interpolate-start-source").set_value("Dataset image").run()
    assert not at.exception
    assert any("**Data** page" in info.value for info in at.info)

    at = interpolate_page(random_dataset(side=32, channels=3))
    at.segmented_control(key="interpolate-start-source").set_value("Dataset image").run()
    assert not at.exception
    assert any("32x32 RGB" in info.value and "64x64 grayscale" in info.value for info in at.info)
    assert not at.download_button


@pytest.fixture
def browser_path(monkeypatch):
    from dogvae.components.latent_canvas import runtime_missing

    if runtime_missing():
        pytest.skip(runtime_missing())
    monkeypatch.delenv("DOGVAE_BROWSER_DECODER")


def player_data(at: AppTest) -> dict | None:
    """What the page hands the browser's frame player, or None without one."""
    import json

    shown = [json.loads(element.proto.json) for element in at.get("bidi_component")]
    shown = [data for data in shown if not data.get("preload")]  # the runtime, loading ahead
    return shown[0] if shown else None


def test_the_browser_plays_the_frames_and_the_strip_and_gif_stay(tiny_run, browser_path, media):
    from dogvae import latent, samplers
    from dogvae.runs import read_latent_stats

    at = interpolate_page()
    data = player_data(at)
    assert data is not None and data["autoplay"] and data["fps"] == 8.0
    assert not [slider for slider in at.slider if slider.key == "interpolate-frame"]
    stats = read_latent_stats(tiny_run)
    ends = [samplers.draw_latents(1, 2, stats, samplers.AUTO, seed)[0][0] for seed in (1, 2)]
    expected = latent.interpolate(ends[0], ends[1], 8, "slerp")
    assert np.allclose(data["frames"], expected, atol=1e-6)
    assert data["fallback"].startswith("data:image/png;base64,")  # the first frame, until then
    # The strip and both downloads are still there.
    assert image_url(at, "8 steps, slerp")
    assert at.download_button(key="interpolate-png-download")
    assert "tiny-interpolation.gif" in media

    at.slider(key="interpolate-steps").set_value(5).run()
    assert len(player_data(at)["frames"]) == 5


def test_once_the_browser_cannot_play_the_server_shows_the_frames(tiny_run, browser_path):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["interpolate-player:unavailable"] = "this browser has no WebAssembly"
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception and player_data(at) is None
    assert "Decoding on the server: this browser has no WebAssembly." in [
        caption.value for caption in at.caption
    ]
    assert at.slider(key="interpolate-frame").max == 8
    assert image_url(at, "Frame 1 of 8")
