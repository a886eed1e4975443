"""AppTest for the Generate page: the sample grid and its memorisation check, the latent
sliders (plain axes or PCA directions) with their buttons and photo upload, the
traversal and the latent map of 2-D runs.

Runs are saved once per module (untrained models, no training) and copied into
each test's own runs folder; the ``models`` fixture keeps them in memory, so a
test can compute what the page should show.

How images are compared: AppTest's media storage names every file after a hash
of its bytes, so an ``st.image``'s URL (or an eager download's) changes exactly
when its encoded pixels do (``image_urls``, ``point_url``). Where a test needs
the pixels themselves (sizes, downloads), the ``media`` fixture records the
bytes the page hands to Streamlit, by URL, and the deferred downloads (the GIF)
as callables, by file name.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import dog_like, make_dataset, save_test_run, vivid_decoder
from PIL import Image
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest

from dogvae import images, latent, runs, samplers
from dogvae.data import Dataset, decode_image
from dogvae.latent_stats import LatentStats

APP = Path(__file__).parent.parent / "streamlit_app.py"
PAGE = "pages/generate.py"
SIDE = 64  # ModelConfig's default image size
MAP_SIZE = 12  # the latent map is MAP_SIZE x MAP_SIZE images


def latent_stats(latent_dim: int) -> LatentStats:
    """Statistics of made-up latent codes: means centred on 0.5, a different spread along
    each axis; log-variances from -4 to 0."""
    rng = np.random.default_rng(0)
    spreads = np.linspace(2.0, 0.2, latent_dim)
    means = 0.5 + rng.standard_normal((300, latent_dim)) * spreads
    return latent.latent_statistics(means, rng.uniform(-4.0, 0.0, means.shape))


@pytest.fixture(autouse=True)
def server_path(monkeypatch):
    """Today's path, the sliders drawn by the server; the browser decoder's tests undo it."""
    monkeypatch.setenv("DOGVAE_BROWSER_DECODER", "0")


@pytest.fixture(scope="module")
def models() -> dict[str, tuple]:
    """(encoder, decoder) of each saved run, to compute in the test what the page should show."""
    from dogvae.config import ModelConfig
    from dogvae.model import build_encoder

    made = {}
    for name, latent_dim in (("tiny", 2), ("pca", 12)):
        config = ModelConfig(latent_dim=latent_dim)
        made[name] = (build_encoder(config), vivid_decoder(config))
    return made


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory, models) -> Path:
    """Untrained seed-preset runs, each in its folder: "tiny" (latent 2) and "pca" (latent 12),
    both with latent statistics."""
    from dogvae.config import ModelConfig

    folder = tmp_path_factory.mktemp("saved")
    for name, (encoder, decoder) in models.items():
        config = ModelConfig(latent_dim=encoder.outputs[0].shape[-1])
        save_test_run(
            folder / name / name,
            encoder,
            decoder,
            config,
            latent_stats=latent_stats(config.latent_dim),
        )
    return folder


@pytest.fixture
def tiny_run(runs_folder, saved_runs) -> Path:
    shutil.copytree(saved_runs / "tiny", runs_folder, dirs_exist_ok=True)
    return runs_folder / "tiny"


def copy_without_statistics(saved_runs: Path, runs_folder: Path) -> Path:
    """The "pca" run as "wide": latent 12, saved without latent statistics."""
    shutil.copytree(saved_runs / "pca" / "pca", runs_folder / "wide")
    (runs_folder / "wide" / runs.LATENT_STATS).unlink()
    return runs_folder / "wide"


@pytest.fixture
def wide_run(runs_folder, saved_runs) -> Path:
    return copy_without_statistics(saved_runs, runs_folder)


@pytest.fixture
def older_run(tiny_run) -> Path:
    """The "tiny" run with the latent statistics of runs saved before the "near" sampler:
    no log-variances of its training codes."""
    stats = runs.read_latent_stats(tiny_run)
    runs.write_latent_stats(tiny_run, replace(stats, point_log_vars=None))
    return tiny_run


@pytest.fixture
def pca_run(runs_folder, saved_runs) -> Path:
    shutil.copytree(saved_runs / "pca", runs_folder, dirs_exist_ok=True)
    return runs_folder / "pca"


def run(target) -> AppTest:
    """Run the app (an AppTest, or a widget just set or clicked) and check it showed no error."""
    at = target.run()
    assert not at.exception, at.exception
    return at


def generate_page(dataset: Dataset | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    if dataset is not None:
        at.session_state["dataset"] = dataset
    # Straight to the page: before the first run AppTest finds it by its file name.
    return run(at.switch_page(PAGE))


def image_urls(at: AppTest) -> list[str]:
    """The URL of every st.image on the page, in order: equal URLs mean equal images."""
    return [url for element in at.image for url in element.value]


def captions(at: AppTest) -> list[str]:
    """The captions of every st.image on the page, in order."""
    return [text for element in at.image for text in element.captions]


def point_url(at: AppTest) -> str:
    """The URL of the slider point's PNG download: equal URLs mean equal decoded images."""
    return at.download_button(key="generate-point-download").proto.url


def downloaded(media, at: AppTest, key: str) -> np.ndarray:
    data, _ = media[at.download_button(key=key).proto.url]
    return np.asarray(Image.open(io.BytesIO(data)))


def pixels(media, url: str) -> np.ndarray:
    """An image's pixels, from the media files or inline (a data URL)."""
    inline = "data:image/png;base64,"
    data = base64.b64decode(url.removeprefix(inline)) if url.startswith(inline) else media[url][0]
    return np.asarray(Image.open(io.BytesIO(data)))


def sliders(at: AppTest) -> list:
    """The latent sliders (keys generate-<run>-z<n>), whatever their labels."""
    return [slider for slider in at.slider if re.fullmatch(r"generate-\w+-z\d+", slider.key or "")]


def slider_values(at: AppTest) -> list[float]:
    return [slider.value for slider in sliders(at)]


def first_dog(run_dir: Path) -> tuple[np.ndarray, list[float]]:
    """Where the sliders start: the first dog of the page's default grid (16, seed 0), its
    latent point and its slider values (clipped to ±3, on the 0.05 grid)."""
    stats = runs.read_latent_stats(run_dir)
    latent_dim = runs.read_run_info(run_dir).model_config.latent_dim
    sampler = samplers.samplers_for(stats)[0]
    z = samplers.draw_latents(16, latent_dim, stats, sampler, 0, 1.0)[0][0]
    values, _ = latent.slider_basis(latent_dim, stats).from_point(z)
    return z, [round(round(value / 0.05) * 0.05, 2) for value in np.clip(values, -3, 3)]


def scatter_series(at: AppTest) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latent map's scatter chart data: the training dogs' rows and the slider point's."""
    (chart,) = at.get("vega_lite_chart")
    frame = dataframe_util.convert_arrow_bytes_to_pandas_df(chart.proto.datasets[0].data.data)
    return frame[frame.series == "training dogs"], frame[frame.series == "slider point"]


def click(at: AppTest, label: str) -> None:
    run(next(button for button in at.button if button.label == label).click())


def decoded_png(decoder, point: np.ndarray) -> np.ndarray:
    """What the point download holds for ``point``: the decoded image as uint8 (H, W)."""
    from dogvae.model import decode

    return images.to_uint8(decode(decoder, point)[0])[..., 0]


def png_file(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


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
    assert file_name == "tiny-samples-near-seed0.png"
    assert Image.open(io.BytesIO(data)).size == (side, side)

    run(at.slider(key="generate-count").set_value(4))
    side = 2 * SIDE + 3 * 2
    assert pixels(media, image_urls(at)[0]).shape[:2] == (2 * side, 2 * side)


def test_samples_are_variations_of_training_dogs_new_dogs_or_from_the_prior(
    tiny_run, models, media
):
    from dogvae.model import decode

    at = generate_page()
    sampler = at.radio(key="generate-tiny-sampler")
    assert sampler.value == "near" and sampler.options == [
        "variations of training dogs",
        "new dogs like the training set",
        "from the prior N(0, I)",
    ]
    decoder = models["tiny"][1]

    def shows(z) -> bool:
        """Whether the page's grid (enlarged twice) is exactly these points, decoded."""
        expected = images.image_grid(decode(decoder, z))[..., 0]
        return np.array_equal(pixels(media, image_urls(at)[0])[::2, ::2], expected)

    stats = latent_stats(2)
    assert shows(samplers.sample_near_data(16, stats, 0))
    run(at.slider(key="generate-temperature").set_value(0.5))
    assert shows(samplers.sample_near_data(16, stats, 0, temperature=0.5))
    run(at.radio(key="generate-tiny-sampler").set_value("data"))
    assert shows(samplers.sample_like_data(16, stats, 0, temperature=0.5))
    run(at.radio(key="generate-tiny-sampler").set_value("prior"))
    assert shows(samplers.sample_latents(16, 2, 0, temperature=0.5))
    _, file_name = media[at.download_button(key="generate-grid-download").proto.url]
    assert file_name == "tiny-samples-prior-seed0.png"


def test_a_run_with_a_fitted_mixture_offers_it_second(tiny_run, models, media):
    from dogvae.mixture import with_mixture
    from dogvae.model import decode

    stats = runs.read_latent_stats(tiny_run)
    fitted = with_mixture(stats, stats.points)
    runs.write_latent_stats(tiny_run, fitted)
    at = generate_page()
    sampler = at.radio(key="generate-tiny-sampler")
    assert sampler.value == "near"  # the default stays the most dog-like
    assert sampler.options[:2] == [
        "variations of training dogs",
        "new dogs from clusters of the training set",
    ]
    run(at.radio(key="generate-tiny-sampler").set_value("mixture"))
    expected = images.image_grid(
        decode(models["tiny"][1], samplers.sample_from_mixture(16, fitted, 0))
    )
    assert np.array_equal(pixels(media, image_urls(at)[0])[::2, ::2], expected[..., 0])


def test_a_run_without_its_codes_log_variances_offers_new_dogs_first(older_run, models, media):
    from dogvae.model import decode

    at = generate_page()
    sampler = at.radio(key="generate-tiny-sampler")
    assert sampler.value == "data"
    assert sampler.options == ["new dogs like the training set", "from the prior N(0, I)"]
    expected = images.image_grid(
        decode(models["tiny"][1], samplers.sample_like_data(16, latent_stats(2), 0))
    )
    assert np.array_equal(pixels(media, image_urls(at)[0])[::2, ::2], expected[..., 0])

    # Recording the codes (as `python -m dogvae stats` does) offers "near" on the next run.
    runs.write_latent_stats(older_run, latent_stats(2))
    run(at)
    assert at.radio(key="generate-tiny-sampler").options[0] == "variations of training dogs"


def test_without_latent_statistics_samples_come_from_the_prior(wide_run):
    at = generate_page()
    assert at.radio(key="generate-wide-sampler").options == ["from the prior N(0, I)"]


def test_seed_and_resample_change_the_grid_only(tiny_run):
    at = generate_page()
    grid_url, point = image_urls(at)[0], point_url(at)

    run(at.number_input(key="generate-seed").set_value(5))
    seed5_url = image_urls(at)[0]
    assert seed5_url != grid_url
    assert point_url(at) == point

    run(at.button[0].click())  # Resample
    assert at.button[0].label == "Resample"
    assert at.number_input(key="generate-seed").value != 5
    assert image_urls(at)[0] != seed5_url

    run(at.number_input(key="generate-seed").set_value(0))
    assert image_urls(at)[0] == grid_url


def test_moving_a_slider_changes_the_decoded_image(tiny_run):
    at = generate_page()
    assert [slider.label for slider in sliders(at)] == ["z1", "z2"]
    assert any("Each slider sets one latent coordinate" in text.value for text in at.caption)
    grid_url, point = image_urls(at)[0], point_url(at)

    run(at.slider(key="generate-tiny-z1").set_value(1.5))
    assert point_url(at) != point
    assert image_urls(at)[0] == grid_url


def test_the_sliders_start_at_the_first_dog_of_the_grid(tiny_run, models, media):
    z, values = first_dog(tiny_run)
    at = generate_page()
    assert slider_values(at) == pytest.approx(values)
    # Plain axes: the values are the first dog's coordinates (rounded to the sliders' step).
    assert np.abs(np.array(values) - z).max() <= 0.025 + 1e-6
    shown = downloaded(media, at, "generate-point-download")
    assert np.array_equal(shown, decoded_png(models["tiny"][1], np.array(values)))


def test_random_point_then_reset(wide_run):
    at = generate_page()
    start = point_url(at)
    assert slider_values(at) == pytest.approx(first_dog(wide_run)[1])

    click(at, "Random point")
    values = slider_values(at)
    assert any(values)  # eight exact zeros from a normal distribution do not happen
    assert all(-3.0 <= value <= 3.0 for value in values)
    assert np.allclose(np.round(np.array(values) / 0.05) * 0.05, values)
    assert point_url(at) != start

    click(at, "Reset")
    assert slider_values(at) == [0.0] * 8
    origin = point_url(at)
    assert origin != start
    click(at, "Random point")
    click(at, "Reset")
    assert point_url(at) == origin


def test_a_wide_latent_without_statistics_shows_its_first_eight_axes(wide_run):
    at = generate_page()
    assert [slider.label for slider in sliders(at)] == [f"z{index}" for index in range(1, 9)]
    assert any("12 latent dimensions" in caption.value for caption in at.caption)
    assert not any(header.value == "Latent map" for header in at.header)


def test_a_wide_latent_with_statistics_slides_along_directions_around_the_average_dog(
    pca_run, models, media
):
    _, decoder = models["pca"]
    basis = latent.slider_basis(12, runs.read_latent_stats(pca_run))
    at = generate_page()
    assert [slider.label for slider in sliders(at)] == [f"direction {i}" for i in range(1, 9)]
    assert any("vary most" in caption.value for caption in at.caption)

    click(at, "Random point")
    click(at, "Reset")
    assert slider_values(at) == [0.0] * 8
    average_dog = decoded_png(decoder, basis.to_point(np.zeros(8)))
    shown = downloaded(media, at, "generate-point-download")
    assert np.abs(shown.astype(int) - average_dog).max() <= 1
    # The average dog is not the origin's image (the made-up means are centred on 0.5).
    assert np.abs(shown.astype(int) - decoded_png(decoder, np.zeros(12))).max() > 10


def test_an_uploaded_photo_puts_the_sliders_at_its_point(pca_run, models, media):
    from dogvae.model import encode

    encoder, decoder = models["pca"]
    basis = latent.slider_basis(12, runs.read_latent_stats(pca_run))
    photo = png_file(dog_like((48, 40), seed=3))
    z_mean = encode(encoder, decode_image(photo, SIDE, 1)[None])[0][0]
    expected, _ = basis.from_point(z_mean)
    at = generate_page()
    before = point_url(at)

    run(at.file_uploader(key="generate-pca-upload").set_value(("dog.png", photo, "image/png")))
    assert not at.error
    assert np.abs(np.array(slider_values(at)) - np.clip(expected, -3, 3)).max() <= 0.025 + 1e-6
    assert captions(at)[1:3] == ["Your photo, as the model sees it", "Its reconstruction"]
    # The sliders and the residual together are the photo's point: the image is its reconstruction.
    assert point_url(at) != before
    shown = downloaded(media, at, "generate-point-download")
    assert np.abs(shown.astype(int) - decoded_png(decoder, z_mean)).max() <= 1

    # The upload is used once: moving a slider afterwards sticks.
    run(at.slider(key="generate-pca-z1").set_value(2.0))
    assert at.slider(key="generate-pca-z1").value == 2.0
    assert "Its reconstruction" in captions(at)

    click(at, "Reset")  # also forgets the photo's residual: back to the average dog
    average_dog = decoded_png(decoder, basis.to_point(np.zeros(8)))
    shown = downloaded(media, at, "generate-point-download")
    assert np.abs(shown.astype(int) - average_dog).max() <= 1


def test_an_unusable_upload_is_refused_and_changes_nothing(tiny_run):
    at = generate_page()
    run(at.slider(key="generate-tiny-z1").set_value(1.0))
    point, before = point_url(at), slider_values(at)

    run(
        at.file_uploader(key="generate-tiny-upload").set_value(
            ("dog.png", b"this is not a picture of a dog\n", "image/png")
        )
    )
    assert any("not a usable image" in error.value for error in at.error)
    assert slider_values(at) == before and before[0] == 1.0
    assert point_url(at) == point
    assert "Its reconstruction" not in captions(at)


def test_traversal_grid_and_gif(tiny_run, media):
    at = generate_page()
    # Default: 9 steps; four rows (the slider point and three random points).
    traversal = downloaded(media, at, "generate-traversal-download")
    assert traversal.shape[:2] == (4 * SIDE + 5 * 2, 9 * SIDE + 10 * 2)

    run(at.slider(key="generate-traversal-steps").set_value(5))
    traversal = downloaded(media, at, "generate-traversal-download")
    assert traversal.shape[:2] == (4 * SIDE + 5 * 2, 5 * SIDE + 6 * 2)
    gif = Image.open(io.BytesIO(media["tiny-traversal-z1.gif"]()))
    assert gif.n_frames == 2 * 5 - 2  # forwards, then backwards without repeating the ends
    assert gif.size == (4 * SIDE, 4 * SIDE)

    # The top row is the slider point: at its own z1 value it is the point's image.
    run(at.slider(key="generate-tiny-z1").set_value(-3.0))
    run(at.button(key="generate-traversal-update").click())
    first = downloaded(media, at, "generate-traversal-download")[2 : 2 + SIDE, 2 : 2 + SIDE]
    assert np.array_equal(first, downloaded(media, at, "generate-point-download"))

    run(at.selectbox(key="generate-tiny-traversal-axis").set_value("z2"))
    assert "tiny-traversal-z2.gif" in media


def test_a_2d_run_shows_the_latent_map_and_the_training_dogs(tiny_run, media):
    at = generate_page()
    assert any(header.value == "Latent map" for header in at.header)
    side = MAP_SIZE * SIDE + (MAP_SIZE + 1) * 2
    assert downloaded(media, at, "generate-map-download").shape[:2] == (side, side)
    training, point = scatter_series(at)
    assert len(training) == 300  # every made-up latent mean (fewer than MAX_SCATTER_POINTS)
    _, values = first_dog(tiny_run)
    assert point[["z1", "z2"]].values == pytest.approx(np.array([values]), abs=1e-6)

    # The point marks the sliders when the map was drawn, and moves with Update.
    run(at.slider(key="generate-tiny-z1").set_value(1.5))
    run(at.slider(key="generate-tiny-z2").set_value(-0.5))
    run(at.button(key="generate-map-update").click())
    _, point = scatter_series(at)
    assert point[["z1", "z2"]].values.tolist() == [[1.5, -0.5]]

    (tiny_run / runs.LATENT_STATS).unlink()
    at = generate_page()
    assert not at.get("vega_lite_chart")
    assert any("no statistics" in caption.value for caption in at.caption)


def test_memorisation_check_pairs_samples_with_their_nearest_training_images(
    tiny_run, models, media
):
    at = generate_page()
    run(at.toggle(key="generate-nearest").set_value(True))
    assert any("**Data** page" in info.value for info in at.info)

    # A training set holding an exact copy of the first sample, among noise.
    from dogvae.model import decode

    drawn = samplers.sample_near_data(16, latent_stats(2), 0)  # the page's default draw
    first = images.to_uint8(decode(models["tiny"][1], drawn)[:1])
    noise = np.random.default_rng(0).integers(0, 256, (5, SIDE, SIDE, 1), dtype=np.uint8)
    at.session_state["dataset"] = make_dataset(np.concatenate([noise, first]))
    run(at)
    assert not at.info
    assert any("Median RMS distance" in caption.value for caption in at.caption)
    # 16 pairs, four to a row: 4 rows of 8 images, enlarged twice.
    pairs = pixels(media, image_urls(at)[1])[::2, ::2]
    assert pairs.shape[:2] == (4 * SIDE + 5 * 2, 8 * SIDE + 9 * 2)
    sample, nearest = (
        pairs[2 : 2 + SIDE, 2 : 2 + SIDE],
        pairs[2 : 2 + SIDE, 4 + SIDE : 4 + 2 * SIDE],
    )
    assert np.array_equal(sample, nearest)


def test_point_download_is_the_shown_point(tiny_run, media):
    at = generate_page()
    run(at.slider(key="generate-tiny-z2").set_value(-1.0))
    data, file_name = media[point_url(at)]
    assert file_name == "tiny-point.png"
    saved = np.asarray(Image.open(io.BytesIO(data)))
    assert saved.shape == (SIDE, SIDE)  # grayscale, at the model's size
    # The large view is the same image, each pixel repeated 4x4.
    shown = pixels(media, image_urls(at)[1])
    assert shown.shape == (4 * SIDE, 4 * SIDE)
    assert np.array_equal(shown[::4, ::4], saved)


def test_sliders_survive_a_page_switch_but_not_a_model_switch(tiny_run, saved_runs, runs_folder):
    at = generate_page()
    run(at.slider(key="generate-tiny-z1").set_value(1.5))
    run(at.switch_page("pages/data.py"))
    run(at.switch_page(PAGE))
    assert at.slider(key="generate-tiny-z1").value == 1.5

    wide = copy_without_statistics(saved_runs, runs_folder)
    at.session_state["active_run"] = str(wide)
    run(at)
    assert slider_values(at) == pytest.approx(first_dog(wide)[1])


def canvas_data(at: AppTest) -> dict | None:
    """What the page hands the browser's latent canvas, or None without one."""
    import json

    shown = [json.loads(element.proto.json) for element in at.get("bidi_component")]
    shown = [data for data in shown if not data.get("preload")]  # the runtime, loading ahead
    if not shown:
        return None
    (data,) = shown
    return data


@pytest.fixture
def browser_path(monkeypatch):
    from dogvae.components.latent_canvas import runtime_missing

    if runtime_missing():
        pytest.skip(runtime_missing())
    monkeypatch.delenv("DOGVAE_BROWSER_DECODER")


def test_the_browser_draws_the_sliders_and_a_pad_from_the_first_dog(wide_run, browser_path, models):
    at = generate_page()
    data = canvas_data(at)
    assert data is not None and not sliders(at)
    assert not any("Decoding on the server" in caption.value for caption in at.caption)
    assert data["values"] == pytest.approx(first_dog(wide_run)[1])
    assert data["labels"] == [f"z{index}" for index in range(1, 9)] and data["pad"] == [0, 1]
    assert data["range"] == [-3.0, 3.0] and data["step"] == 0.05
    assert data["fallback"].startswith("data:image/png;base64,")
    revision = data["revision"]

    run(at.selectbox(key="generate-wide-pad-x").set_value("z3"))
    run(at.selectbox(key="generate-wide-pad-y").set_value("z8"))
    assert canvas_data(at)["pad"] == [2, 7]
    assert canvas_data(at)["revision"] == revision  # choosing the pad keeps the user's point

    click(at, "Random point")
    data = canvas_data(at)
    assert data["revision"] == revision + 1 and data["values"] != first_dog(wide_run)[1]
    click(at, "Reset")
    assert canvas_data(at)["revision"] == revision + 2
    assert canvas_data(at)["values"] == [0.0] * 8


def test_without_the_runtime_files_one_line_says_so_and_the_server_draws(
    tiny_run, browser_path, monkeypatch, tmp_path, media
):
    from dogvae.components import latent_canvas

    monkeypatch.setattr(latent_canvas, "VENDOR_DIR", tmp_path)
    at = generate_page()
    assert canvas_data(at) is None
    notes = [caption.value for caption in at.caption if "Decoding on the server" in caption.value]
    assert len(notes) == 1 and "make setup" in notes[0]
    assert [slider.label for slider in sliders(at)] == ["z1", "z2"]
    assert pixels(media, image_urls(at)[1]).shape == (4 * SIDE, 4 * SIDE)  # the point's image


def test_once_the_browser_cannot_decode_the_server_draws(tiny_run, browser_path):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["generate-tiny-canvas:unavailable"] = "this browser has no WebAssembly"
    run(at.switch_page(PAGE))
    assert canvas_data(at) is None
    assert "Decoding on the server: this browser has no WebAssembly." in [
        caption.value for caption in at.caption
    ]
    assert [slider.label for slider in sliders(at)] == ["z1", "z2"]
    assert not [box for box in at.selectbox if (box.key or "").startswith("generate-tiny-pad")]


def test_the_runtime_and_the_decoder_load_ahead_of_the_canvas(tiny_run, browser_path):
    import json

    at = generate_page()
    preloads = [
        data
        for data in (json.loads(element.proto.json) for element in at.sidebar.get("bidi_component"))
        if data.get("preload")
    ]
    # The sidebar's, on every page (the runtime alone), and this page's (the run's decoder).
    assert [data["decoder"] is None for data in preloads] == [True, False]
    assert preloads[1]["decoder"] == canvas_data(at)["decoder"]
    assert preloads[0]["wasm_url"] == canvas_data(at)["wasm_url"]
