"""Tests for dogvae.data.decode: decode_image, reduced JPEG decoding, the pixel limit."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from conftest import make_png
from data_helpers import dog_photo, jpeg_bytes, png_bytes, png_header
from PIL import Image, ImageOps

from dogvae import data
from dogvae.data import REASON_EMPTY, REASON_NOT_IMAGE, REASON_TOO_LARGE, decode_image, limits

# decode_image


@pytest.mark.parametrize("channels", [1, 3])
def test_decode_gives_uint8_square_with_channels(tmp_path, channels):
    path = make_png(tmp_path / "dog.png", size=(40, 30))
    image = decode_image(path.read_bytes(), image_size=32, channels=channels)
    assert image.dtype == np.uint8
    assert image.shape == (32, 32, channels)


def test_decode_rgb_order_and_grayscale_luma():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 2] = 255  # OpenCV writes BGR: this is pure red
    encoded = png_bytes(red)
    rgb = decode_image(encoded, image_size=4, channels=3)
    assert (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all()
    gray = decode_image(encoded, image_size=4, channels=1)
    assert (gray == 76).all()  # 0.299 * 255


def test_decode_drops_alpha(tmp_path):
    pixels = np.zeros((6, 6, 4), np.uint8)
    pixels[..., :3] = (200, 100, 50)  # fully transparent, colour still there
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, "PNG")
    image = decode_image(buffer.getvalue(), image_size=4, channels=3)
    assert image.shape == (4, 4, 3)
    assert (image == (200, 100, 50)).all()


def test_decode_scales_16_bit_with_rounding():
    # 257 * 100 + 129 is 100.502 in 8 bits: rounding gives 101, the top byte 100.
    pixels = np.zeros((4, 12), np.uint16)
    pixels[:, 0:4], pixels[:, 4:8], pixels[:, 8:12] = 65535, 32896, 257 * 100 + 129
    image = decode_image(png_bytes(pixels), image_size=12, channels=1)[..., 0]
    assert (image[:, 0:4] == 255).all()
    assert (image[:, 4:8] == 128).all()
    assert (image[:, 8:12] == 101).all()

    colour = np.zeros((4, 4, 3), np.uint16)
    colour[..., 2] = 65535  # red in OpenCV's BGR
    rgb = decode_image(png_bytes(colour), image_size=4, channels=3)
    assert rgb.dtype == np.uint8
    assert (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all()


def test_decode_applies_exif_orientation():
    # 20 wide x 10 tall, left half red, right half blue; Orientation 6 means
    # "rotate 90 degrees clockwise to display", giving 10 wide x 20 tall with red on top.
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)
    pixels[:, 10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    encoded = buffer.getvalue()

    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(encoded))))
    assert upright.shape == (20, 10, 3)
    expected = cv2.resize(upright, (20, 20), interpolation=cv2.INTER_AREA)
    image = decode_image(encoded, image_size=20, channels=3)
    assert np.abs(image.astype(int) - expected).max() <= 2
    assert image[:8, :, 0].mean() > 200 and image[:8, :, 2].mean() < 50  # red on top
    assert image[12:, :, 2].mean() > 200 and image[12:, :, 0].mean() < 50  # blue below


def test_decode_reasons_start_the_message(monkeypatch):
    with pytest.raises(ValueError, match=f"^{REASON_EMPTY}"):
        decode_image(b"")
    with pytest.raises(ValueError, match=f"^{REASON_NOT_IMAGE}"):
        decode_image(b"hello, I am text")
    with pytest.raises(ValueError, match=f"^{REASON_TOO_LARGE}: 9,000x9,000 pixels"):
        decode_image(png_header(9000, 9000))
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 10)
    with pytest.raises(ValueError, match=f"^{REASON_TOO_LARGE}: 11 bytes"):
        decode_image(b"x" * 11)


@pytest.mark.filterwarnings("error")
def test_decode_huge_headers_beyond_pillow_limits_are_too_large():
    # 10,000^2 makes Pillow warn (an error here), 20,000^2 makes it raise.
    for side in (10_000, 20_000):
        with pytest.raises(ValueError, match=f"^{REASON_TOO_LARGE}"):
            decode_image(png_header(side, side))


def test_decode_refuses_more_pixels_than_the_limit(monkeypatch, tmp_path):
    path = make_png(tmp_path / "dog.png", size=(40, 30))
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=f"^{REASON_TOO_LARGE}: 40x30 pixels"):
        decode_image(path.read_bytes())


def test_decode_refuses_bad_settings(tmp_path):
    encoded = make_png(tmp_path / "dog.png").read_bytes()
    with pytest.raises(ValueError, match="channels"):
        decode_image(encoded, channels=2)
    with pytest.raises(ValueError, match="image_size"):
        decode_image(encoded, image_size=0)


def test_jpeg_size_reads_the_frame_header():
    pixels = dog_photo(300, 200)
    assert data.jpeg_size(jpeg_bytes(pixels)) == (300, 200)
    assert data.jpeg_size(jpeg_bytes(pixels, progressive=True)) == (300, 200)
    assert data.jpeg_size(jpeg_bytes(pixels, orientation=6)) == (300, 200)  # as stored
    assert data.jpeg_size(png_bytes(pixels)) is None
    assert data.jpeg_size(b"\xff\xd8\xff") is None
    assert data.jpeg_size(jpeg_bytes(pixels)[:20]) is None


def decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Records the (width, height) that cv2.imdecode returns, before the final resize."""
    sizes = []
    real = cv2.imdecode

    def spy(buffer, flags):
        image = real(buffer, flags)
        if image is not None:
            sizes.append((image.shape[1], image.shape[0]))
        return image

    monkeypatch.setattr(cv2, "imdecode", spy)
    return sizes


@pytest.mark.parametrize(
    ("width", "height", "image_size", "decoded"),
    [
        (200, 200, 64, (200, 200)),  # halving would leave 100 < 2 x 64: full decode
        (256, 300, 64, (128, 150)),  # 1/2 keeps exactly 2 x 64
        (640, 480, 64, (320, 240)),  # 1/2; 1/4 would leave 120 rows
        (800, 600, 64, (200, 150)),  # 1/4
        (1600, 1200, 64, (200, 150)),  # 1/8
        (1600, 1200, 128, (400, 300)),  # a larger output needs more pixels: 1/4
    ],
)
def test_reduced_decoding_keeps_at_least_twice_the_output_size(
    monkeypatch, width, height, image_size, decoded
):
    encoded = jpeg_bytes(dog_photo(width, height))
    sizes = decoded_sizes(monkeypatch)
    image = decode_image(encoded, image_size=image_size, channels=1)
    assert image.shape == (image_size, image_size, 1)
    assert sizes == [decoded]


def test_png_is_never_decoded_reduced(monkeypatch):
    sizes = decoded_sizes(monkeypatch)
    decode_image(png_bytes(dog_photo(1024, 768)), image_size=64)
    assert sizes == [(1024, 768)]


@pytest.mark.parametrize("channels", [1, 3])
def test_reduced_decoding_stays_close_to_a_full_decode(channels):
    encoded = jpeg_bytes(dog_photo(1200, 900, seed=3))
    reduced = decode_image(encoded, 64, channels).astype(int)
    full = decode_image(encoded, 64, channels, reduced=False).astype(int)
    difference = np.abs(reduced - full)
    assert difference.mean() < 1.5
    assert difference.max() <= 64  # only along sharp edges


@pytest.mark.parametrize("channels", [1, 3])
def test_reduced_decoding_applies_exif_orientation(monkeypatch, channels):
    # 1600 wide x 800 tall, left half red, right half blue; orientation 6 turns it
    # into 800 x 1600 with red on top. 800 / 4 = 200 >= 2 x 64: decoded at 1/4.
    pixels = np.zeros((800, 1600, 3), np.uint8)
    pixels[:, :800] = (255, 0, 0)
    pixels[:, 800:] = (0, 0, 255)
    encoded = jpeg_bytes(pixels, orientation=6)
    sizes = decoded_sizes(monkeypatch)
    image = decode_image(encoded, image_size=64, channels=channels).astype(int)
    assert sizes == [(200, 400)]  # reduced, and already upright
    full = decode_image(encoded, image_size=64, channels=channels, reduced=False)
    assert np.abs(image - full).max() <= 4
    if channels == 3:
        assert image[:28, :, 0].mean() > 200 and image[:28, :, 2].mean() < 50  # red on top
        assert image[36:, :, 2].mean() > 200 and image[36:, :, 0].mean() < 50  # blue below
    else:
        assert abs(image[:28].mean() - 76) < 4 and abs(image[36:].mean() - 29) < 4


def test_a_jpeg_announcing_too_many_pixels_is_refused_before_decoding(monkeypatch):
    encoded = bytearray(jpeg_bytes(dog_photo(40, 30)))
    frame = encoded.index(b"\xff\xc0")
    encoded[frame + 5 : frame + 9] = struct.pack(">HH", 9000, 9000)
    monkeypatch.setattr(cv2, "imdecode", lambda *args: pytest.fail("decoded"))
    with pytest.raises(ValueError, match=f"^{REASON_TOO_LARGE}: 9,000x9,000 pixels"):
        decode_image(bytes(encoded))
