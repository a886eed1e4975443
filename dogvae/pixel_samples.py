"""Images drawn from a run's own pixel likelihood, not only its decoder's mean (NumPy only).

A sample of the model is z from a sampler, then x from p(x|z). The decoder's mean (what
``decoder.keras`` gives and the pages show) is the average of p(x|z): the texture the
likelihood leaves to chance is averaged away, so the means of every run look blurred.
For runs with a discretised logistic (``logistic`` and ``logistic-ar``), this draws the
8-bit pixels themselves, in raster order: pixel (i, j) from the logistic at the mean
moved by the already drawn neighbours' errors (``dogvae.likelihood``'s formula), its
scale times ``temperature``. At temperature 1 that is an exact draw from p(x|z); lower
temperatures give less grain (0: each pixel at its location, rounded), as with the
temperatures of PixelCNN-style samplers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dogvae.checks import check_int
from dogvae.likelihood import BINS, causal_offsets

MAX_PIXEL_TEMPERATURE = 1.5
DEFAULT_PIXEL_TEMPERATURE = 0.6  # see MODEL_CARD.md: the best Fréchet distance measured


def check_pixel_temperature(value: float, name: str = "the pixel temperature") -> float:
    """``value`` as a float, or ValueError unless it is from 0 to MAX_PIXEL_TEMPERATURE."""
    value = float(value)
    if not 0.0 <= value <= MAX_PIXEL_TEMPERATURE:
        raise ValueError(f"{name} must be from 0 to {MAX_PIXEL_TEMPERATURE:g}, got {value:g}")
    return value


def sample_pixels(
    means: np.ndarray,
    log_scales: np.ndarray,
    neighbours: Sequence[Sequence[int]] = (),
    weights: np.ndarray | None = None,
    *,
    temperature: float = DEFAULT_PIXEL_TEMPERATURE,
    seed: int | None = None,
) -> np.ndarray:
    """Draw uint8 images from discretised logistics around ``means``.

    Args:
        means: (n, H, W, C) in [0, 1], the decoder's means.
        log_scales: The logistics' log-scales (in [0, 1] units), broadcasting to ``means``.
        neighbours: (K, 2) row and column offsets of the pixels before each pixel in
            raster order whose errors move its location (a "logistic-ar" run's
            ``NEIGHBOURS``); empty: every pixel on its own.
        weights: (K, C) the neighbours' weights.
        temperature: Multiplies every scale, 0 to MAX_PIXEL_TEMPERATURE.
        seed: The same seed draws the same images.

    Returns:
        (n, H, W, C) uint8.

    Raises:
        ValueError: For shapes that do not fit, neighbours that do not come before the
            pixel, or a temperature out of range.
    """
    means = np.asarray(means, np.float64)
    if means.ndim != 4:
        raise ValueError(f"means must be (n, H, W, C), got shape {means.shape}")
    scales = np.broadcast_to(np.exp(np.asarray(log_scales, np.float64)), means.shape)
    temperature = check_pixel_temperature(temperature)
    offsets = causal_offsets(neighbours)
    kernel = np.zeros((0, means.shape[3])) if weights is None else np.asarray(weights, np.float64)
    kernel = kernel.reshape(len(offsets), means.shape[3])
    if seed is not None:
        seed = check_int("seed", seed, minimum=0)
    n, height, width, _ = means.shape
    uniform = np.random.default_rng(seed).uniform(1e-6, 1 - 1e-6, means.shape)
    noise = temperature * scales * (np.log(uniform) - np.log1p(-uniform))
    radius = int(np.abs(offsets).max()) if len(offsets) else 0
    # Errors x/255 - mean of the pixels drawn so far, 0 outside the image and ahead.
    errors = np.zeros((n, height + radius, width + 2 * radius, means.shape[3]))
    pixels = np.zeros(means.shape, np.uint8)
    above = [(k, row, col) for k, (row, col) in enumerate(offsets) if row < 0]
    left = [(k, col) for k, (row, col) in enumerate(offsets) if row == 0]
    for i in range(height):
        # The rows above are drawn: their share of the whole row at once.
        shift = np.zeros((n, width, means.shape[3]))
        for k, row, col in above:
            top, start = radius + i + row, radius + col
            shift += kernel[k] * errors[:, top, start : start + width]
        for j in range(width):
            location = means[:, i, j] + shift[:, j]
            for k, col in left:
                location = location + kernel[k] * errors[:, radius + i, radius + j + col]
            value = np.clip(np.rint((location + noise[:, i, j]) * (BINS - 1)), 0, BINS - 1)
            pixels[:, i, j] = value
            errors[:, radius + i, radius + j] = value / (BINS - 1) - means[:, i, j]
    return pixels
