"""Bits per dimension of 8-bit images under a run's own decoder: the negative ELBO and IWAE.

A decoder trained with binary cross-entropy on grey levels in [0, 1] defines, read
as a density, a continuous Bernoulli (Loaiza-Ganem and Cunningham 2019) with
parameter ``lambda`` (the sigmoid output) for every pixel. Integrating that density
over the pixel's bin ``[k/256, (k+1)/256]`` gives the probability of the 8-bit value
``k``, so the log-likelihood is one of a discrete image, comparable with the bits per
dimension papers report. A decoder that models discrete pixels itself plugs in its own
:data:`PixelLogProb` (:func:`discretized_logistic_log_prob` is one).

Bits per dimension: ``-log p(x) / (N * H * W * C * ln 2)``, where ``p`` is already the
probability of the 8-bit pixels (no separate ``log 256`` term is needed). A uniform
guess gives exactly 8. NumPy only: the model is reached through two callables.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from dogvae.checks import check_int

BINS = 256  # values of an 8-bit pixel
# What sigmoid outputs are clipped to, as in training's BCE (keras.config.epsilon()).
PROBABILITY_EPSILON = 1e-7
MAX_SAMPLES = 4096  # importance samples per image; more is a typo
# Importance samples per image unless asked otherwise: what a 2-core CPU evaluates for
# 2,000 photos in a few minutes (README, Bits per dimension).
DEFAULT_SAMPLES = 16

# The "logistic-ar" likelihood's causal neighbours, (row, column) offsets: the two rows
# above within two columns either side, and the two pixels to the left. In raster
# order they come before the pixel, so p(x | z) is a product of proper conditionals.
NEIGHBOUR_RADIUS = 2
NEIGHBOURS = tuple(
    (row, column)
    for row in range(-NEIGHBOUR_RADIUS, 1)
    for column in range(-NEIGHBOUR_RADIUS, NEIGHBOUR_RADIUS + 1)
    if row < 0 or column < 0
)

# decoder outputs, uint8 pixels (n, H, W, C) -> log-probability of each image (n,), nats.
PixelLogProb = Callable[[Any, np.ndarray], np.ndarray]


def continuous_bernoulli_log_prob(probabilities: Any, pixels: np.ndarray) -> np.ndarray:
    """Log-probability of 8-bit images under per-pixel continuous Bernoullis, in nats.

    The continuous Bernoulli density on [0, 1] is ``C(l) * l**x * (1 - l)**(1 - x)``
    with ``C(l) = 2 atanh(1 - 2 l) / (1 - 2 l)`` (2 at ``l = 1/2``). Its integral over
    ``[a, a + w]`` with ``w = 1/256`` and ``eta = logit(l)`` is, in closed form,
    ``C(l) * l**a * (1 - l)**(1 - a) * w * expm1(w * eta) / (w * eta)``; each factor is
    taken as a logarithm in float64, with the limits at ``l = 1/2`` and ``eta = 0``, so
    it stays exact near 1/2 and finite near 0 and 1.

    Args:
        probabilities: The decoder's output ``l`` in [0, 1], shape ``(n, H, W, C)``;
            clipped to ``[1e-7, 1 - 1e-7]`` as the training loss clips it.
        pixels: uint8 images of the same shape.

    Returns:
        ``(n,)`` float64: ``log P(image)``, the sum over its pixels.
    """
    lam = np.clip(
        np.asarray(probabilities, np.float64), PROBABILITY_EPSILON, 1 - PROBABILITY_EPSILON
    )
    low = _check_pixels(pixels, lam.shape).astype(np.float64) / BINS
    log_lam, log_one_minus = np.log(lam), np.log1p(-lam)
    eta = log_lam - log_one_minus
    log_prob = (
        low * log_lam
        + (1.0 - low) * log_one_minus
        + _log_normaliser(lam, eta)
        + math.log(1.0 / BINS)
        + _log_expm1_ratio(eta / BINS)
    )
    return log_prob.reshape(len(log_prob), -1).sum(axis=1)


def discretized_logistic_log_prob(outputs: Any, pixels: np.ndarray) -> np.ndarray:
    """Log-probability of 8-bit images under per-pixel discretised logistics, in nats.

    As in PixelCNN++ (Salimans et al. 2017): pixel ``k`` is the logistic's mass on
    ``[(k - 0.5) / 255, (k + 0.5) / 255]``, with the two end bins reaching to minus
    and plus infinity, so the 256 probabilities sum to 1.

    Args:
        outputs: ``(means, log_scales)``: means in [0, 1] of shape ``(n, H, W, C)`` and
            log-scales (in the same [0, 1] units) of that shape or one broadcasting to it.
        pixels: uint8 images, ``(n, H, W, C)``.

    Returns:
        ``(n,)`` float64 log-probabilities.
    """
    means, log_scales = outputs
    means = np.asarray(means, np.float64)
    values = _check_pixels(pixels, means.shape).astype(np.float64)
    inverse_scale = np.exp(-np.broadcast_to(np.asarray(log_scales, np.float64), means.shape))
    upper = (values + 0.5) / (BINS - 1) - means
    lower = (values - 0.5) / (BINS - 1) - means
    # log(sigmoid(b) - sigmoid(a)) = log(sigmoid(b)) + log1p(-exp(a - b)) + log(sigmoid(-a)).
    b = np.where(values >= BINS - 1, np.inf, upper * inverse_scale)
    a = np.where(values <= 0, -np.inf, lower * inverse_scale)
    with np.errstate(invalid="ignore"):
        log_cdf_b = np.where(np.isinf(b), 0.0, -np.logaddexp(0.0, -b))
        log_survival_a = np.where(np.isinf(a), 0.0, -np.logaddexp(0.0, a))
        gap = np.where(np.isinf(a) | np.isinf(b), -np.inf, a - b)
    log_prob = log_cdf_b + log_survival_a + np.log1p(-np.exp(gap))
    return np.maximum(log_prob, -1e4).reshape(len(log_prob), -1).sum(axis=1)


def neighbour_errors(errors: np.ndarray, offsets: Any = NEIGHBOURS) -> np.ndarray:
    """(n, H, W, C) errors -> (n, H, W, C, K): at each pixel, the errors of the pixels at
    its (row, column) ``offsets``, 0 where one falls outside the image."""
    offsets = np.asarray(offsets, np.int64).reshape(-1, 2)
    radius = int(np.abs(offsets).max()) if len(offsets) else 0
    padded = np.pad(errors, ((0, 0), (radius, radius), (radius, radius), (0, 0)))
    height, width = errors.shape[1:3]
    tops, lefts = radius + offsets[:, 0], radius + offsets[:, 1]
    return np.stack(
        [
            padded[:, top : top + height, left : left + width]
            for top, left in zip(tops, lefts, strict=True)
        ],
        axis=-1,
    )


def causal_offsets(neighbours: Any) -> np.ndarray:
    """(K, 2) int row and column offsets, checked to come before the pixel in raster order.

    Raises:
        ValueError: For an offset at or after the pixel.
    """
    offsets = np.asarray(neighbours, np.int64).reshape(-1, 2)
    if any(row > 0 or (row == 0 and column >= 0) for row, column in offsets):
        raise ValueError(f"the neighbours {offsets.tolist()} are not all before the pixel")
    return offsets


def autoregressive_logistic_log_prob(neighbours: Any, weights: Any) -> PixelLogProb:
    """The discretised logistic of a "logistic-ar" run, for its neighbours and weights.

    Pixel (i, j) of channel c is the discretised logistic around
    ``mean[i, j, c] + sum_k weights[k][c] * (x / 255 - mean)[i + dy_k, j + dx_k, c]``
    with the head's log-scale, where ``neighbours[k] = (dy_k, dx_k)`` come before the
    pixel in raster order and errors outside the image are 0: given z, a product of
    proper conditionals in raster order, so the masses of the 256^(H*W*C) images sum to 1.

    Args:
        neighbours: (K, 2) row and column offsets, each row < 0 or (row 0 and column < 0).
        weights: (K, C) weights.
    """
    offsets = causal_offsets(neighbours)
    kernel = np.asarray(weights, np.float64).reshape(len(offsets), -1)

    def log_prob(outputs: Any, pixels: np.ndarray) -> np.ndarray:
        means, log_scales = outputs
        means = np.asarray(means, np.float64)
        values = _check_pixels(pixels, means.shape).astype(np.float64)
        neighbours = neighbour_errors(values / (BINS - 1) - means, offsets)
        moved = means + np.einsum("nhwck,kc->nhwc", neighbours, kernel)
        return discretized_logistic_log_prob((moved, log_scales), pixels)

    return log_prob


LIKELIHOODS: dict[str, PixelLogProb] = {
    "continuous_bernoulli": continuous_bernoulli_log_prob,
    "discretized_logistic": discretized_logistic_log_prob,
}


def neighbour_terms(run_config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """A "logistic-ar" run's neighbours (K, 2) and weights (K, C) from its ``config.json``,
    or None for a run whose likelihood has no neighbours.

    Raises:
        ValueError: When the run says it has them but they are not readable.
    """
    described = run_config.get("likelihood") or {}
    if not isinstance(described, dict) or described.get("distribution") != (
        "discretized_logistic_ar"
    ):
        return None
    try:
        offsets = causal_offsets(described["neighbours"])
        return offsets, np.asarray(described["weights"], np.float64).reshape(len(offsets), -1)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"the run's autoregressive likelihood is not readable: {error}") from None


def pixel_log_prob_for(run_config: dict[str, Any]) -> PixelLogProb:
    """The pixel distribution a run's ``config.json`` names, for its decoder's outputs.

    A run without a ``likelihood`` entry has a sigmoid decoder trained with binary
    cross-entropy: a continuous Bernoulli, read from the mean image alone. Otherwise
    ``likelihood.distribution`` names one of :data:`LIKELIHOODS`; a discretised
    logistic reads ``(means, log_scales)``, the outputs of decoder.keras and
    decoder_scale.keras.

    Raises:
        ValueError: For a distribution this version does not know.
    """
    described = run_config.get("likelihood") or {}
    name = (
        described.get("distribution", "continuous_bernoulli")
        if isinstance(described, dict)
        else None
    )
    terms = neighbour_terms(run_config)
    if terms is not None:
        return autoregressive_logistic_log_prob(*terms)
    if name not in LIKELIHOODS:
        raise ValueError(
            f"the run's likelihood {described!r} is not one this version of dogvae can "
            f"evaluate (known: {', '.join(LIKELIHOODS)})"
        )
    return LIKELIHOODS[name]


def log_normal(z: np.ndarray, mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """``log N(z; mean, diag(exp(log_var)))`` summed over the last axis, float64."""
    z, mean, log_var = (np.asarray(a, np.float64) for a in (z, mean, log_var))
    return -0.5 * np.sum(math.log(2 * math.pi) + log_var + (z - mean) ** 2 * np.exp(-log_var), -1)


def gaussian_kl(mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """Closed-form ``KL(N(mean, diag(exp(log_var))) || N(0, I))`` per row, in nats, float64."""
    mean, log_var = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
    return 0.5 * np.sum(np.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)


def bits_per_dim(nats: np.ndarray | float, dims: int) -> np.ndarray | float:
    """A negative log-likelihood in nats per image as bits per dimension."""
    return np.asarray(nats) / (dims * math.log(2.0))


def likelihood_bounds(
    encode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    decode: Callable[[np.ndarray], Any],
    images: np.ndarray,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    log_prob: PixelLogProb = continuous_bernoulli_log_prob,
    batch_size: int = 8,
) -> dict[str, float]:
    """Negative ELBO and IWAE bound (Burda et al. 2016) of uint8 images, in bits per dim.

    For each image, ``samples`` latent points ``z_k`` are drawn from its posterior
    ``q(z|x)``; with ``log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)``, the ELBO is
    the mean of ``log w_k`` and the IWAE bound ``logsumexp(log w_k) - log K``. Both come
    from the same draws, so IWAE <= ELBO in bits for every image and they are equal
    at ``samples=1``. The points of ``batch_size`` images are decoded in one call.

    Args:
        encode: uint8 images -> (z_mean, z_log_var), ``(n, latent_dim)`` each.
        decode: ``(m, latent_dim)`` latent points -> what ``log_prob`` reads.
        images: uint8 images ``(n, H, W, C)``, at least one.
        samples: Importance samples K per image, 1 to MAX_SAMPLES.
        seed: Seed of the posterior draws; the same seed gives the same figures.
        log_prob: The decoder's distribution of the pixels (see :data:`LIKELIHOODS`).
        batch_size: Images whose K points are decoded together.

    Returns:
        Means over the images, in bits per dimension: ``elbo_bpd`` (the negative ELBO),
        ``iwae_bpd``, ``reconstruction_bpd`` (``-log p(x|z)`` averaged over the draws)
        and ``kl_bpd`` (closed-form KL to N(0, I)); plus ``samples``.

    Raises:
        ValueError: If there are no images, they are not uint8, or ``samples`` is out
            of range.
    """
    samples = check_int("samples", samples, minimum=1, maximum=MAX_SAMPLES)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0 or images.dtype != np.uint8:
        raise ValueError(
            f"need uint8 images (n, H, W, C), n >= 1; got {images.dtype} {images.shape}"
        )
    dims = int(np.prod(images.shape[1:]))
    rng = np.random.default_rng(seed)
    elbo, iwae, reconstruction, kl = [], [], [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        z_mean, z_log_var = (np.asarray(a, np.float64) for a in encode(batch))
        n, latent_dim = z_mean.shape
        noise = rng.standard_normal((n, samples, latent_dim))
        z = z_mean[:, None] + np.exp(0.5 * z_log_var)[:, None] * noise
        flat_z = z.reshape(n * samples, latent_dim)
        repeated = np.repeat(batch, samples, axis=0)
        log_likelihood = log_prob(decode(flat_z.astype(np.float32)), repeated).reshape(n, samples)
        log_weights = (
            log_likelihood
            + log_normal(z, 0.0, 0.0)
            - log_normal(z, z_mean[:, None], z_log_var[:, None])
        )
        elbo.append(-log_weights.mean(axis=1))
        iwae.append(math.log(samples) - _logsumexp(log_weights, axis=1))
        reconstruction.append(-log_likelihood.mean(axis=1))
        kl.append(gaussian_kl(z_mean, z_log_var))
    figures = {
        "elbo_bpd": elbo,
        "iwae_bpd": iwae,
        "reconstruction_bpd": reconstruction,
        "kl_bpd": kl,
    }
    result = {
        key: float(bits_per_dim(np.concatenate(parts).mean(), dims))
        for key, parts in figures.items()
    }
    return {**result, "samples": samples}


def _check_pixels(pixels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.shape != shape or pixels.ndim < 2:
        raise ValueError(
            f"pixels must be uint8 images of the decoder's shape {shape}, "
            f"got {pixels.dtype} {pixels.shape}"
        )
    return pixels


def _log_normaliser(lam: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """``log C(l) = log(eta / (2 l - 1))``, with its limit ``log 2`` near ``l = 1/2``."""
    delta = 2.0 * lam - 1.0
    near_half = np.abs(delta) < 1e-5
    # eta / delta = 2 atanh(delta) / delta = 2 (1 + delta**2 / 3 + ...) near 1/2.
    safe = np.where(near_half, 1.0, delta)
    ratio = np.where(near_half, 2.0 + 2.0 * delta**2 / 3.0, eta / safe)
    return np.log(ratio)


def _log_expm1_ratio(t: np.ndarray) -> np.ndarray:
    """``log(expm1(t) / t)``, with its limit ``t/2`` near 0 (both signs)."""
    small = np.abs(t) < 1e-6
    safe = np.where(small, 1.0, t)
    # For t < 0 both expm1(t) and t are negative: their ratio is positive.
    exact = np.log(np.expm1(safe) / safe)
    return np.where(small, t / 2.0 + t * t / 24.0, exact)


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(values - top).sum(axis=axis, keepdims=True))).squeeze(axis)
