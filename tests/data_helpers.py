"""Helpers for the dogvae.data tests: encoded images made in memory, and dataset comparisons."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from dogvae.data import Dataset


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG bytes of an array, written by OpenCV (which expects BGR order)."""
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    return encoded.tobytes()


def png_header(width: int, height: int) -> bytes:
    """A PNG that announces width x height pixels but holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(pixels: np.ndarray, orientation: int | None = None, **options) -> bytes:
    """JPEG bytes of an RGB or grayscale array (Pillow), optionally with an EXIF orientation."""
    buffer = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    Image.fromarray(pixels.squeeze()).save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def dog_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A large smooth RGB photo, drawn small and scaled up: drawing it at full size
    would take hundreds of MB, which subprocess tests would inherit as peak RSS."""
    from conftest import dog_like

    small = dog_like((max(8, width // 8), max(8, height // 8)), seed=seed)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def assert_same_dataset(first: Dataset, second: Dataset) -> None:
    np.testing.assert_array_equal(first.images, second.images)
    assert first.images.shape == second.images.shape
    assert first.images.dtype == second.images.dtype
    pd.testing.assert_frame_equal(first.table, second.table)
    assert first.report == second.report


def reasons_by_path(dataset: Dataset) -> dict[str, str]:
    return {item.path: item.reason for item in dataset.report.unreadable}


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
