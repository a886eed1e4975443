"""Encoded bytes -> one square uint8 image: OpenCV, reduced JPEG decoding, the pixel limit.

Every problem with one image raises ``ImageError`` whose reason is one of the
``REASON_*`` constants, so the caller can record it and go on.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings

import numpy as np
from PIL import Image

from dogvae.data import limits
from dogvae.data.report import REASON_EMPTY, REASON_NOT_IMAGE, REASON_TOO_LARGE, ImageError

# OpenCV refuses to allocate images above this many pixels, but it reads the
# limit from the environment (default 2**30, a 3 GB grayscale buffer), so it has
# to be set before cv2 is first imported. If cv2 was imported earlier with
# another limit, decode_image still refuses larger images after decoding.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(limits.MAX_IMAGE_PIXELS))
import cv2

# Part of every cache key: bump it whenever decoding changes the pixels it produces.
DECODER_VERSION = 4
OPENCV_VERSION = cv2.__version__

# cv2.IMREAD_REDUCED_GRAYSCALE_n carries no colour bit, so it combines with
# IMREAD_COLOR_RGB (IMREAD_REDUCED_COLOR_n includes IMREAD_COLOR, which is BGR).
REDUCED_FLAGS = {
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

# Pillow is only asked for an image's header after OpenCV failed; the lock
# keeps the temporary warnings filter (process-wide in Python 3.11) to one
# thread at a time.
_PIL_HEADER_LOCK = threading.Lock()


def decode_image(
    data: bytes, image_size: int = 64, channels: int = 1, *, reduced: bool = True
) -> np.ndarray:
    """Decode an encoded image into a square uint8 array.

    EXIF orientation is applied, alpha dropped, 16-bit samples scaled to 8 bits
    (rounded), and the image squashed (not cropped) to ``image_size`` squared
    with area interpolation.

    A JPEG at least four times the output size is decoded at 1/2, 1/4 or 1/8
    scale (libjpeg's DCT scaling, several times faster), but never below twice
    the output size, so the final area interpolation still averages at least
    2x2 pixels into one.

    Args:
        data: The encoded file (JPEG, PNG, BMP, WebP or TIFF).
        image_size: Side of the output square.
        channels: 1 for grayscale (OpenCV's luma), 3 for RGB (in that order).
        reduced: Allow reduced-scale JPEG decoding (False: always decode in full).

    Returns:
        An ``(image_size, image_size, channels)`` uint8 array.

    Raises:
        ValueError: If the image cannot be used (an ``ImageError`` whose message
            starts with one of the ``REASON_*`` strings, e.g. ``"too large:
            9,000x9,000 pixels"``), or if a setting is invalid.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if len(data) == 0:
        raise ImageError(REASON_EMPTY)
    if len(data) > limits.MAX_FILE_BYTES:
        raise ImageError(REASON_TOO_LARGE, f"{len(data):,} bytes")

    colour = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR_RGB
    # ANYDEPTH keeps 16-bit samples so that they are rounded below instead of
    # truncated by OpenCV; any flag but IMREAD_UNCHANGED applies EXIF orientation.
    flags = cv2.IMREAD_ANYDEPTH | colour
    size = jpeg_size(data)
    if size is not None:
        width, height = size
        # Checked here because a reduced decode would hide the full size below.
        if width * height > limits.MAX_IMAGE_PIXELS:
            raise ImageError(REASON_TOO_LARGE, f"{width:,}x{height:,} pixels")
        factor = jpeg_reduction(size, image_size) if reduced else 1
        if factor > 1:
            flags = REDUCED_FLAGS[factor] | (0 if channels == 1 else cv2.IMREAD_COLOR_RGB)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        # OpenCV raises (instead of returning None) when the header announces
        # more than OPENCV_IO_MAX_IMAGE_PIXELS.
        image = None
    if image is None:
        raise _diagnose(data)
    height, width = image.shape[:2]
    if height * width > limits.MAX_IMAGE_PIXELS:
        raise ImageError(REASON_TOO_LARGE, f"{width:,}x{height:,} pixels")

    image = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        # OpenCV's convention for floating-point images is 0..1.
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(REASON_NOT_IMAGE, f"unsupported pixel type {image.dtype}")
    return image.reshape(image_size, image_size, channels)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, or None when ``data`` is no JPEG.

    Reads only the marker segments before the first frame header, without
    decoding; the size is as stored, before any EXIF rotation.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
        elif marker in (0xD9, 0xDA):  # end of image or scan data before any frame header
            return None
        elif marker in _JPEG_FRAME_MARKERS:
            if position + 9 > end:
                return None
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return width, height
        else:
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def jpeg_reduction(size: tuple[int, int], image_size: int) -> int:
    """The JPEG scale-down (1, 2, 4 or 8) that keeps both sides at least twice ``image_size``."""
    shorter = min(size)
    for factor in (8, 4, 2):
        if -(-shorter // factor) >= 2 * image_size:  # libjpeg rounds scaled sizes up
            return factor
    return 1


def _diagnose(data: bytes) -> ImageError:
    """Tell an image too large to decode from a file that is not an image.

    Only called after OpenCV failed; Pillow reads just the header.
    """
    try:
        with _PIL_HEADER_LOCK, warnings.catch_warnings():
            # Pillow warns (an error under -W error) from about 89 M pixels;
            # the size is all that is wanted here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                image_format = image.format
    except Image.DecompressionBombError as error:
        # Raised from twice Pillow's limit, before the size can be read.
        match = re.search(r"\((\d+) pixels\)", str(error))
        detail = f"{int(match.group(1)):,} pixels" if match else "over 178 million pixels"
        return ImageError(REASON_TOO_LARGE, detail)
    except Exception:  # Pillow raises many types for arbitrary bytes
        return ImageError(REASON_NOT_IMAGE)
    if width * height > limits.MAX_IMAGE_PIXELS:
        return ImageError(REASON_TOO_LARGE, f"{width:,}x{height:,} pixels")
    return ImageError(REASON_NOT_IMAGE, f"{image_format} data that could not be decoded")
