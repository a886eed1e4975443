"""Tests for dogvae.images: uint8 conversion, grids, strips, PNG, GIF, saving and the
nearest images; no model needed."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from dogvae import images
from dogvae.images import (
    gif_bytes,
    image_grid,
    image_strip,
    nearest_images,
    png_bytes,
    save_image,
    to_uint8,
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
        upscale(image, images.MAX_UPSCALE + 1)
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


def test_nearest_images_finds_the_copy():
    rng = np.random.default_rng(3)
    pool = rng.integers(0, 256, (50, 8, 8, 1)).astype(np.uint8)
    queries = np.stack([pool[17], pool[3]]).astype(np.float32) / 255
    queries[0] += 0.01  # nearly, not exactly, the training image
    index, distance = nearest_images(queries, pool, chunk=7)
    assert index.tolist() == [17, 3]
    assert distance[1] == pytest.approx(0, abs=1e-6) and 0 < distance[0] < 0.02
    with pytest.raises(ValueError, match="values each"):
        nearest_images(queries, pool[:, :4])
