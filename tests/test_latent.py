"""Tests for dogvae.latent: latent maths and image output, no model needed."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dogvae import latent
from dogvae.latent import (
    axis,
    gif_bytes,
    image_grid,
    image_strip,
    interpolate,
    lerp,
    pca_directions,
    png_bytes,
    sample_latents,
    sample_like_data,
    save_image,
    slerp,
    to_uint8,
    traversal,
    upscale,
)


def _gif_frames(data: bytes) -> list[Image.Image]:
    gif = Image.open(io.BytesIO(data))
    frames = []
    for index in range(gif.n_frames):
        gif.seek(index)
        frames.append(gif.copy())
    return frames


@pytest.fixture
def rgb_frames() -> np.ndarray:
    # 200 distinct colours: few enough for the GIF palette to be exact.
    rng = np.random.default_rng(3)
    colours = rng.integers(0, 256, size=(200, 3), dtype=np.uint8)
    return colours[rng.integers(0, 200, size=(4, 6, 5))]


# ---------------------------------------------------------------------------
# sampling


def test_sample_latents_shape_dtype_and_seed():
    first = sample_latents(5, 16, seed=7)
    assert first.shape == (5, 16)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, sample_latents(5, 16, seed=7))
    assert not np.array_equal(first, sample_latents(5, 16, seed=8))
    np.testing.assert_array_equal(first[:2], sample_latents(2, 16, seed=7))


def test_sample_latents_looks_standard_normal():
    values = sample_latents(2000, 8, seed=0)
    assert abs(values.mean()) < 0.05
    assert abs(values.std() - 1.0) < 0.05


@pytest.mark.parametrize(
    ("n", "latent_dim", "seed"), [(0, 4, None), (3, 0, None), (2.5, 4, None), (3, 4, -1)]
)
def test_sample_latents_rejects_bad_arguments(n, latent_dim, seed):
    with pytest.raises(ValueError, match="must be"):
        sample_latents(n, latent_dim, seed=seed)


def test_temperature_scales_the_same_draws():
    base = sample_latents(6, 8, seed=3)
    np.testing.assert_allclose(sample_latents(6, 8, seed=3, temperature=0.5), base * 0.5)
    assert not sample_latents(4, 8, seed=3, temperature=0.0).any()
    for bad in (-0.1, 2.5, float("nan"), "1", True):
        with pytest.raises(ValueError, match="temperature"):
            sample_latents(2, 8, seed=0, temperature=bad)


def test_sampling_like_the_data_matches_its_mean_and_covariance():
    # Correlated, shifted "latent means" in 3-D whose spread is far from N(0, I).
    rng = np.random.default_rng(0)
    mixing = np.array([[2.0, 0.0, 0.0], [1.0, 0.3, 0.0], [0.0, 0.0, 0.05]])
    z_means = rng.standard_normal((4000, 3)) @ mixing + np.array([1.0, -2.0, 0.5])
    stats = latent.latent_statistics(z_means)
    samples = sample_like_data(20_000, stats, seed=1)
    assert samples.shape == (20_000, 3) and samples.dtype == np.float32
    np.testing.assert_allclose(samples.mean(axis=0), z_means.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(np.cov(samples.T), np.cov(z_means.T), atol=0.08)
    np.testing.assert_array_equal(samples[:5], sample_like_data(5, stats, seed=1))
    colder = sample_like_data(20_000, stats, seed=1, temperature=0.5)
    np.testing.assert_allclose(colder - stats["mean"], (samples - stats["mean"]) * 0.5, atol=1e-5)


def test_sampling_like_the_data_refuses_missing_or_broken_statistics():
    stats = latent.latent_statistics(np.random.default_rng(0).standard_normal((50, 4)))
    with pytest.raises(ValueError, match="latent statistics"):
        sample_like_data(3, None)
    with pytest.raises(ValueError, match="do not fit"):
        sample_like_data(3, {**stats, "mean": stats["mean"][:2]})
    with pytest.raises(ValueError, match="NaN"):
        sample_like_data(3, {**stats, "variance": np.full(4, np.nan)})


# ---------------------------------------------------------------------------
# lerp and slerp


@pytest.mark.parametrize("function", [lerp, slerp])
def test_endpoints_are_exact(function):
    a, b = sample_latents(2, 32, seed=1)
    np.testing.assert_array_equal(function(a, b, 0.0), a)
    np.testing.assert_array_equal(function(a, b, 1.0), b)
    rows = function(a, b, np.array([0.0, 0.5, 1.0]))
    assert rows.shape == (3, 32)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows[0], a)
    np.testing.assert_array_equal(rows[-1], b)


def test_scalar_t_gives_a_vector():
    a, b = sample_latents(2, 4, seed=1)
    assert slerp(a, b, 0.3).shape == (4,)
    assert lerp(a, b, 0.3).shape == (4,)


def test_slerp_keeps_norm_where_lerp_shrinks_it():
    a = np.array([3.0, 0.0, 0.0])
    b = np.array([0.0, 3.0, 0.0])
    ts = np.linspace(0.0, 1.0, 7)
    np.testing.assert_allclose(np.linalg.norm(slerp(a, b, ts), axis=1), 3.0, rtol=1e-12)
    assert np.linalg.norm(lerp(a, b, 0.5)) < 3.0 * 0.75
    np.testing.assert_allclose(slerp(a, b, 0.5), [3 / np.sqrt(2), 3 / np.sqrt(2), 0.0])


def test_slerp_on_random_latents_of_equal_norm():
    a, b = sample_latents(2, 64, seed=2).astype(np.float64)
    b = b / np.linalg.norm(b) * np.linalg.norm(a)
    middle = slerp(a, b, 0.5)
    np.testing.assert_allclose(np.linalg.norm(middle), np.linalg.norm(a), rtol=1e-9)
    assert np.linalg.norm(lerp(a, b, 0.5)) < np.linalg.norm(a) * 0.95


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]),  # parallel
        ([1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]),  # opposite
        ([0.0, 0.0, 0.0], [1.0, 2.0, 3.0]),  # zero vector
        ([1e-15, 0.0, 0.0], [0.0, 1.0, 0.0]),  # almost zero
    ],
)
def test_slerp_falls_back_to_lerp(a, b):
    a, b = np.array(a), np.array(b)
    ts = np.linspace(0.0, 1.0, 5)
    result = slerp(a, b, ts)
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result, lerp(a, b, ts))


def test_interpolation_keeps_float64_and_rejects_bad_input():
    a = np.array([1.0, 0.0])
    b = np.array([0.0, 1.0])
    assert slerp(a, b, 0.5).dtype == np.float64
    with pytest.raises(ValueError, match="same length"):
        slerp(a, np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="same length"):
        lerp(np.zeros((2, 2)), np.zeros((2, 2)), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        lerp(np.array([np.nan, 0.0]), b, 0.5)
    with pytest.raises(ValueError, match="1-D"):
        slerp(a, b, np.zeros((2, 2)))


# ---------------------------------------------------------------------------
# interpolate


@pytest.mark.parametrize("method", ["slerp", "linear"])
@pytest.mark.parametrize("steps", [2, 3, 10])
def test_interpolate_steps_and_ends(method, steps):
    a, b = sample_latents(2, 16, seed=4)
    rows = interpolate(a, b, steps=steps, method=method)
    assert rows.shape == (steps, 16)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows[0], a)
    np.testing.assert_array_equal(rows[-1], b)


def test_interpolate_methods_differ_in_the_middle():
    a = np.array([1.0, 0.0], dtype=np.float32)
    b = np.array([0.0, 1.0], dtype=np.float32)
    linear = interpolate(a, b, steps=3, method="linear")
    spherical = interpolate(a, b, steps=3)
    np.testing.assert_allclose(linear[1], [0.5, 0.5])
    np.testing.assert_allclose(spherical[1], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)


def test_interpolate_float64_ends_become_float32():
    a, b = np.array([0.1, 0.2]), np.array([0.3, -0.7])
    rows = interpolate(a, b, steps=4)
    np.testing.assert_array_equal(rows[0], a.astype(np.float32))
    np.testing.assert_array_equal(rows[-1], b.astype(np.float32))


def test_interpolate_rejects_bad_arguments():
    a, b = sample_latents(2, 4, seed=0)
    with pytest.raises(ValueError, match="steps must be between 2 and 1000, got 1"):
        interpolate(a, b, steps=1)
    with pytest.raises(ValueError, match="steps"):
        interpolate(a, b, steps=1001)
    with pytest.raises(ValueError, match="steps must be an integer"):
        interpolate(a, b, steps=True)
    with pytest.raises(ValueError, match="'slerp' or 'linear', got 'cubic'"):
        interpolate(a, b, method="cubic")
    with pytest.raises(ValueError, match=r"shapes \(4,\) and \(5,\)"):
        interpolate(a, np.zeros(5))


# ---------------------------------------------------------------------------
# PCA, traversal, axis


def test_pca_recovers_dominant_direction():
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(10)
    direction /= np.linalg.norm(direction)
    offset = rng.standard_normal(10) * 3
    data = (
        offset
        + rng.standard_normal((500, 1)) * 5.0 * direction
        + rng.standard_normal((500, 10)) * 0.3
    )
    mean, components, variance = pca_directions(data.astype(np.float32))
    assert mean.shape == (10,)
    assert components.shape == (10, 10)
    assert variance.shape == (10,)
    assert mean.dtype == components.dtype == variance.dtype == np.float32
    np.testing.assert_allclose(mean, data.mean(axis=0), atol=1e-4)
    assert abs(components[0] @ direction) > 0.99
    np.testing.assert_allclose(np.linalg.norm(components, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(components @ components.T, np.eye(10), atol=1e-5)
    assert np.all(np.diff(variance) <= 0)
    assert 20 < variance[0] < 30  # 5**2 plus a little noise
    np.testing.assert_allclose(variance.sum(), np.var(data, axis=0, ddof=1).sum(), rtol=1e-4)


def test_pca_signs_are_fixed_and_k_limits():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((6, 4))
    _, components, _ = pca_directions(data, k=2)
    assert components.shape == (2, 4)
    for row in components:
        assert row[np.argmax(np.abs(row))] > 0
    _, flipped, _ = pca_directions(-data, k=2)
    np.testing.assert_allclose(flipped, components, atol=1e-6)
    assert pca_directions(data[:3])[1].shape == (3, 4)  # default k is min(n, d)
    with pytest.raises(ValueError, match="k must be between 1 and 4, got 5"):
        pca_directions(data, k=5)
    with pytest.raises(ValueError, match="k must be between 1 and 4"):
        pca_directions(data, k=0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        pca_directions(data[:1])
    with pytest.raises(ValueError, match="2-D"):
        pca_directions(data[0])


def test_traversal_along_axis_and_direction():
    center = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    rows = traversal(center, axis(3, 1), [-2.0, 0.0, 2.0])
    assert rows.shape == (3, 3)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, [[1, 0, 3], [1, 2, 3], [1, 4, 3]])
    rows = traversal(center, np.array([0.5, 0.5, 0.0]), np.linspace(0, 2, 5))
    np.testing.assert_allclose(rows[-1], [2.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="same length"):
        traversal(center, axis(4, 0), [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        traversal(center, axis(3, 0), [])


def test_axis_is_one_hot_and_checks_bounds():
    vector = axis(5, 4)
    assert vector.dtype == np.float32
    np.testing.assert_array_equal(vector, [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(axis(1, 0), [1])
    with pytest.raises(ValueError, match="index must be between 0 and 4, got 5"):
        axis(5, 5)
    with pytest.raises(ValueError, match="index"):
        axis(5, -1)
    with pytest.raises(ValueError, match="latent_dim"):
        axis(0, 0)


# ---------------------------------------------------------------------------
# to_uint8, grids, upscale


def test_to_uint8_rounds_and_clips():
    values = np.array([-0.5, 0.0, 0.5 / 255, 1.49 / 255, 0.5, 1.0, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(values), [0, 0, 0, 1, 128, 255, 255])
    assert to_uint8(values).dtype == np.uint8
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert to_uint8(image) is image


def test_to_uint8_rejects_ambiguous_or_broken_input():
    with pytest.raises(ValueError, match="int64"):
        to_uint8(np.array([0, 255]))
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(np.array([np.nan, 0.5]))


def test_image_grid_shape_pad_and_empty_cells():
    images = np.zeros((5, 4, 3, 3), dtype=np.float32)
    grid = image_grid(images, pad=2, pad_value=200)  # cols = ceil(sqrt(5)) = 3, rows = 2
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * 4 + 2 * 3, 3 * 3 + 2 * 4, 3)
    # Image cells are black, borders and the sixth (empty) cell are pad_value.
    assert (grid[2:6, 2:5] == 0).all()
    assert (grid[0:2] == 200).all()
    assert (grid[8:12, 12:15] == 200).all()
    assert (grid[8:12, 7:10] == 0).all()
    assert (grid == 0).sum() == 5 * 4 * 3 * 3


def test_image_grid_places_images_row_by_row():
    images = np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1) * 50
    grid = image_grid(images, cols=2, pad=1, pad_value=255)
    np.testing.assert_array_equal(
        grid[..., 0],
        [[255] * 5, [255, 0, 255, 50, 255], [255] * 5, [255, 100, 255, 150, 255], [255] * 5],
    )


def test_image_grid_grayscale_without_channel_axis_and_no_pad():
    images = np.ones((3, 2, 2))
    grid = image_grid(images, cols=3, pad=0)
    assert grid.shape == (2, 6, 1)
    assert (grid == 255).all()
    assert image_grid(np.ones((3, 2, 2, 1)), cols=3, pad=0).shape == (2, 6, 1)
    assert image_grid(np.ones((3, 2, 2, 1)), cols=5, pad=1).shape == (4, 16, 1)


def test_image_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="got shape"):
        image_grid(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="got shape"):
        image_grid(np.zeros((0, 2, 2, 3)))
    with pytest.raises(ValueError, match="C 1 or 3"):
        image_grid(np.zeros((1, 2, 2, 4)))
    with pytest.raises(ValueError, match="cols"):
        image_grid(np.zeros((1, 2, 2)), cols=0)
    with pytest.raises(ValueError, match="pad_value"):
        image_grid(np.zeros((1, 2, 2)), pad_value=256)


def test_image_strip_is_one_row():
    strip = image_strip(np.zeros((7, 4, 5, 3), dtype=np.uint8))
    assert strip.shape == (4 + 2 * 2, 7 * 5 + 2 * 8, 3)


def test_upscale_repeats_pixels():
    image = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    big = upscale(image, 3)
    assert big.shape == (6, 6)
    np.testing.assert_array_equal(big[:3, :3], 0)
    np.testing.assert_array_equal(big[3:, 3:], 3)
    rgb = np.random.default_rng(0).random((4, 5, 3))
    assert upscale(rgb, 2).shape == (8, 10, 3)
    np.testing.assert_array_equal(upscale(rgb, 1), rgb)
    with pytest.raises(ValueError, match="factor"):
        upscale(image, 0)
    with pytest.raises(ValueError, match="factor"):
        upscale(image, latent.MAX_UPSCALE + 1)
    with pytest.raises(ValueError, match="shape"):
        upscale(np.zeros(3), 2)


# ---------------------------------------------------------------------------
# PNG and GIF


def test_png_round_trip_keeps_rgb_order(rgb_frames):
    image = rgb_frames[0]
    image[0, 0] = (255, 0, 0)  # pure red stays red, not blue
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(image))))
    assert decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)
    np.testing.assert_array_equal(decoded[0, 0], [255, 0, 0])


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 1)])
def test_png_round_trip_grayscale(shape):
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    decoded = Image.open(io.BytesIO(png_bytes(image)))
    assert decoded.mode == "L"
    np.testing.assert_array_equal(np.asarray(decoded), image.reshape(6, 5))


def test_png_accepts_float_and_rejects_batches():
    decoded = Image.open(io.BytesIO(png_bytes(np.full((2, 3), 0.5))))
    assert (np.asarray(decoded) == 128).all()
    with pytest.raises(ValueError, match="got shape"):
        png_bytes(np.zeros((2, 2, 2, 3)))
    with pytest.raises(ValueError, match="got shape"):
        png_bytes(np.zeros((2, 2, 4)))


def test_gif_keeps_every_frame_and_first_frame_pixels(rgb_frames):
    data = gif_bytes(rgb_frames, duration_ms=80)
    frames = _gif_frames(data)
    assert len(frames) == 4
    np.testing.assert_array_equal(np.asarray(frames[0].convert("RGB")), rgb_frames[0])
    for frame, expected in zip(frames, rgb_frames, strict=True):
        np.testing.assert_array_equal(np.asarray(frame.convert("RGB")), expected)
        assert frame.info["duration"] == 80
    assert Image.open(io.BytesIO(data)).info["loop"] == 0


def test_gif_keeps_identical_consecutive_frames(rgb_frames):
    frames = [rgb_frames[0], rgb_frames[0], rgb_frames[0], rgb_frames[1]]
    decoded = _gif_frames(gif_bytes(frames))
    assert len(decoded) == 4
    for frame, expected in zip(decoded, frames, strict=True):
        pixels = np.asarray(frame.convert("RGB")).astype(int)
        # A repeated frame may differ by one level in one value of one pixel.
        assert np.abs(pixels - expected).sum() <= 1
        np.testing.assert_array_equal(pixels[1:], expected[1:])


def test_gif_grayscale_and_bounce():
    rng = np.random.default_rng(5)
    frames = rng.random((3, 6, 5))  # float (N, H, W)
    frames[1] = frames[0]
    data = gif_bytes(frames, bounce=True)
    gif = Image.open(io.BytesIO(data))
    assert gif.mode == "L"
    assert gif.n_frames == 2 * 3 - 2
    np.testing.assert_array_equal(np.asarray(gif), to_uint8(frames[0]))
    decoded = _gif_frames(data)
    expected = to_uint8(frames[[0, 1, 2, 1]])
    for frame, target in zip(decoded, expected, strict=True):
        difference = np.abs(np.asarray(frame.convert("L")).astype(int) - target)
        assert difference.sum() <= 1


def test_gif_bounce_counts_and_single_frame(rgb_frames):
    assert Image.open(io.BytesIO(gif_bytes(rgb_frames, bounce=True))).n_frames == 6
    assert Image.open(io.BytesIO(gif_bytes(rgb_frames[:2], bounce=True))).n_frames == 2
    single = Image.open(io.BytesIO(gif_bytes(rgb_frames[:1], bounce=True)))
    assert single.n_frames == 1
    np.testing.assert_array_equal(np.asarray(single.convert("RGB")), rgb_frames[0])


def test_gif_of_photo_like_frames_has_all_frames():
    # More than 255 colours per frame: quantized, but still every frame.
    frames = np.random.default_rng(6).random((3, 16, 16, 3))
    frames[2] = frames[1]
    assert Image.open(io.BytesIO(gif_bytes(frames))).n_frames == 3


def test_gif_rejects_bad_arguments(rgb_frames):
    with pytest.raises(ValueError, match="at least one"):
        gif_bytes([])
    with pytest.raises(ValueError, match="same shape"):
        gif_bytes([rgb_frames[0], rgb_frames[0][:3]])
    with pytest.raises(ValueError, match="duration_ms"):
        gif_bytes(rgb_frames, duration_ms=0)
    with pytest.raises(ValueError, match="loop"):
        gif_bytes(rgb_frames, loop=-1)


# ---------------------------------------------------------------------------
# save_image


def test_save_png_and_gif(tmp_path, rgb_frames):
    png_path = save_image(tmp_path / "sample.png", rgb_frames[0])
    assert png_path == tmp_path / "sample.png"
    np.testing.assert_array_equal(np.asarray(Image.open(png_path)), rgb_frames[0])

    gif_path = save_image(str(tmp_path / "walk.GIF"), list(rgb_frames))
    assert Image.open(gif_path).n_frames == 4

    one_frame = save_image(tmp_path / "still.gif", rgb_frames[0])
    assert Image.open(one_frame).n_frames == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.png", "still.gif", "walk.GIF"]


def test_save_image_replaces_and_respects_umask(tmp_path, rgb_frames):
    path = tmp_path / "sample.png"
    path.write_bytes(b"old")
    save_image(path, rgb_frames[1])
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb_frames[1])
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("name", ["out.jpg", "out", "out.png.txt"])
def test_save_image_rejects_other_suffixes(tmp_path, name):
    with pytest.raises(ValueError, match=r"output must end in \.png or \.gif, got"):
        save_image(tmp_path / name, np.zeros((2, 2), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_save_image_needs_existing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_image(tmp_path / "missing" / "out.png", np.zeros((2, 2), dtype=np.uint8))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        save_image(tmp_path / "file" / "out.png", np.zeros((2, 2), dtype=np.uint8))


def test_save_png_refuses_a_batch_and_leaves_no_temp_file(tmp_path, rgb_frames):
    with pytest.raises(ValueError, match="image_grid"):
        save_image(tmp_path / "out.png", rgb_frames)
    with pytest.raises(ValueError, match="got shape"):
        save_image(tmp_path / "out.gif", np.zeros((2, 2, 2, 4)))
    assert list(tmp_path.iterdir()) == []


def test_module_imports_without_heavy_dependencies():
    code = (
        "import sys, dogvae.latent; "
        "print(any(m in sys.modules for m in ('tensorflow', 'keras', 'streamlit', 'cv2')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


# --- slider bases, latent statistics, nearest images -------------------------------------


def test_small_latents_slide_along_their_own_axes():
    basis = latent.slider_basis(2)
    assert basis.labels == ("z1", "z2")
    np.testing.assert_allclose(basis.to_point([0.5, -1.0]), [0.5, -1.0])


def test_wide_latents_without_statistics_show_the_first_eight_axes():
    basis = latent.slider_basis(12)
    assert len(basis.labels) == 8
    point = basis.to_point(np.arange(8.0))
    np.testing.assert_allclose(point[:8], np.arange(8.0))
    np.testing.assert_allclose(point[8:], 0)


def test_sampling_near_the_data_draws_from_the_stored_codes_posteriors():
    rng = np.random.default_rng(5)
    means = rng.normal(size=(3, 4)) * 10  # three codes far apart
    log_vars = np.log(np.array([[0.01], [0.04], [0.09]]) * np.ones((3, 4)))  # std 0.1, 0.2, 0.3
    stats = latent.latent_statistics(means, log_vars)
    np.testing.assert_array_equal(stats["point_log_vars"], log_vars.astype(np.float32))
    samples = latent.sample_near_data(30_000, stats, seed=2)
    assert samples.shape == (30_000, 4) and samples.dtype == np.float32
    # Each draw belongs to one code, with that code's own posterior spread.
    owner = np.argmin(((samples[:, None] - means[None]) ** 2).sum(axis=2), axis=1)
    assert np.bincount(owner, minlength=3).min() > 9_000  # codes chosen uniformly
    for index, std in enumerate((0.1, 0.2, 0.3)):
        mine = samples[owner == index]
        np.testing.assert_allclose(mine.mean(axis=0), means[index], atol=0.02)
        np.testing.assert_allclose(mine.std(axis=0), std, rtol=0.05)
    np.testing.assert_array_equal(samples[:5], latent.sample_near_data(5, stats, seed=2))
    assert not np.array_equal(samples[:5], latent.sample_near_data(5, stats, seed=3))
    at_zero = latent.sample_near_data(10, stats, seed=2, temperature=0.0)
    assert all(any(np.allclose(row, code) for code in means) for row in at_zero)


def test_sampling_near_the_data_needs_the_codes_log_variances():
    means = np.random.default_rng(0).standard_normal((50, 4))
    with pytest.raises(ValueError, match="log-variances"):
        latent.sample_near_data(3, latent.latent_statistics(means))
    stats = latent.latent_statistics(means, np.zeros_like(means))
    with pytest.raises(ValueError, match="do not fit"):
        latent.sample_near_data(3, {**stats, "point_log_vars": stats["point_log_vars"][:, :2]})
    with pytest.raises(ValueError, match="NaN"):
        latent.sample_near_data(3, {**stats, "point_log_vars": np.full((50, 4), np.nan)})
    with pytest.raises(ValueError, match="do not match"):
        latent.latent_statistics(means, np.zeros((50, 3)))


def test_draw_latents_uses_the_best_sampler_a_run_allows():
    means = np.random.default_rng(0).standard_normal((50, 4))
    full = latent.latent_statistics(means, np.full_like(means, -2.0))
    older = latent.latent_statistics(means)
    assert latent.samplers_for(full) == ["near", "data", "prior"]
    assert latent.samplers_for(older) == ["data", "prior"]
    assert latent.samplers_for(None) == ["prior"]
    for stats, best in ((full, "near"), (older, "data"), (None, "prior")):
        z, used = latent.draw_latents(6, 4, stats, "auto", seed=1, temperature=0.7)
        assert used == best and z.shape == (6, 4)
        np.testing.assert_array_equal(z, latent.draw_latents(6, 4, stats, best, 1, 0.7)[0])
    np.testing.assert_array_equal(
        latent.draw_latents(6, 4, full, "near", 1)[0], latent.sample_near_data(6, full, 1)
    )
    np.testing.assert_array_equal(
        latent.draw_latents(6, 4, full, "data", 1)[0], sample_like_data(6, full, 1)
    )
    np.testing.assert_array_equal(
        latent.draw_latents(6, 4, full, "prior", 1)[0], sample_latents(6, 4, 1)
    )
    with pytest.raises(ValueError, match="allows: data, prior"):
        latent.draw_latents(2, 4, older, "near")
    with pytest.raises(ValueError, match="allows: prior"):
        latent.draw_latents(2, 4, None, "data")
    with pytest.raises(ValueError, match="model has 5"):
        latent.draw_latents(2, 5, full, "auto")
    with pytest.raises(ValueError, match="sampler must be"):
        latent.draw_latents(2, 4, full, "posterior")


def test_wide_latents_slide_along_pca_directions_in_standard_deviations():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 16)) * np.r_[3.0, np.linspace(1, 0.1, 15)] + 5.0
    stats = latent.latent_statistics(z)
    basis = latent.slider_basis(16, stats)
    assert basis.labels[0] == "direction 1" and len(basis.labels) == 8
    np.testing.assert_allclose(basis.to_point(np.zeros(8)), z.mean(axis=0), atol=1e-4)
    assert basis.scales[0] == pytest.approx(3.0, rel=0.15)  # std along the widest direction
    assert abs(basis.directions[0][0]) > 0.99


def test_a_point_goes_to_sliders_and_back_exactly():
    rng = np.random.default_rng(1)
    stats = latent.latent_statistics(rng.normal(size=(300, 20)))
    basis = latent.slider_basis(20, stats)
    point = rng.normal(size=20)
    values, residual = basis.from_point(point)
    np.testing.assert_allclose(basis.to_point(values, residual), point, atol=1e-5)
    moved = values.copy()
    moved[0] += 1
    step = basis.to_point(moved, residual) - basis.to_point(values, residual)
    assert np.linalg.norm(step) == pytest.approx(basis.scales[0], rel=1e-5)


def test_latent_statistics_keeps_a_bounded_sample_of_points():
    stats = latent.latent_statistics(np.random.default_rng(2).normal(size=(5000, 2)))
    assert stats["points"].shape == (latent.MAX_SCATTER_POINTS, 2)
    assert stats["components"].shape == (2, 2)
    with pytest.raises(ValueError, match="at least 2"):
        latent.latent_statistics(np.zeros((1, 2)))


def test_nearest_images_finds_the_copy():
    rng = np.random.default_rng(3)
    pool = rng.integers(0, 256, (50, 8, 8, 1)).astype(np.uint8)
    queries = np.stack([pool[17], pool[3]]).astype(np.float32) / 255
    queries[0] += 0.01  # nearly, not exactly, the training image
    index, distance = latent.nearest_images(queries, pool, chunk=7)
    assert index.tolist() == [17, 3]
    assert distance[1] == pytest.approx(0, abs=1e-6) and 0 < distance[0] < 0.02
    with pytest.raises(ValueError, match="values each"):
        latent.nearest_images(queries, pool[:, :4])


def test_statistics_of_another_latent_size_are_refused():
    stats = latent.latent_statistics(np.random.default_rng(4).normal(size=(40, 10)))
    with pytest.raises(ValueError, match="dimensions"):
        latent.slider_basis(12, stats)
