"""What the chromium tests of the latent canvas share: a seed-preset run, the canvas' pixels,
and the server's pixels to compare them with.

Used by tests/test_browser_decoder.py (the component on its demo page) and
tests/test_browser_app_decoder.py (the app's pages).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dogvae.components.latent_canvas import runtime_missing

CANVAS = "canvas[data-dogvae-canvas]"


@pytest.fixture(scope="module")
def runtime_installed() -> None:
    """Skip where onnxruntime-web's files are not installed (no npm at `make setup`)."""
    reason = runtime_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a freshly initialised seed-preset model (and no latent statistics)."""
    import keras

    from dogvae import runs
    from dogvae.config import PRESETS, DataConfig
    from dogvae.model import build_vae

    preset = PRESETS["seed"]
    keras.utils.set_random_seed(3)
    vae = build_vae(preset.model)
    return runs.save_run(
        tmp_path_factory.mktemp("seed-runs") / "seed-random",
        vae.encoder,
        vae.decoder,
        model_config=preset.model,
        train_config=preset.train,
        data_config=DataConfig(),
        data={"source": "none", "readable": 0},
        history=[],
        preset="seed",
    )


def canvas_pixels(page: Any, channels: int, index: int = 0) -> tuple[list[float] | str, np.ndarray]:
    """The point a canvas shows (its slider values, or "frame K") and its pixels, uint8."""
    values, size, rgba = (
        page.locator(CANVAS)
        .nth(index)
        .evaluate(
            """canvas => {
            const { width, height } = canvas;
            const rgba = canvas.getContext("2d").getImageData(0, 0, width, height).data;
            const point = canvas.dataset.point;
            return [point.startsWith("frame") ? point : JSON.parse(point), width, Array.from(rgba)];
        }"""
        )
    )
    image = np.array(rgba, np.uint8).reshape(size, size, 4)
    return values, image[..., :1] if channels == 1 else image[..., :3]


def server_pixels(decoder: Any, point: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) of ``point``, decoded and rounded as the app does."""
    from dogvae.model import decode

    image = decode(decoder, point)[0]
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def assert_close(browser: np.ndarray, expected: np.ndarray, shown: Any) -> np.ndarray:
    """The canvas' pixels equal the server's within 1/255 everywhere; the differences."""
    assert browser.shape == expected.shape
    difference = np.abs(browser.astype(int) - expected.astype(int))
    assert difference.max() <= 1, (
        f"at {shown}: {int((difference > 1).sum())} pixels differ by more than 1/255 "
        f"(at most {difference.max()})"
    )
    return difference
