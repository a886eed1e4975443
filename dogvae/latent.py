"""Latent-space maths and image output, with NumPy and Pillow only.

Everything here works on plain arrays, so it can be used (and tested) without a
model and without TensorFlow: sampling from the prior, interpolating between two
latent vectors, principal directions of encoded data, traversals along a
direction, and turning decoded images into grids, PNG and animated GIF bytes.

Latent vectors are 1-D arrays of length ``latent_dim``; batches of them are
``(n, latent_dim)`` float32 arrays, ready for the decoder. Images are
``(H, W, C)`` (or ``(H, W)``) arrays, either float in [0, 1] as the decoder
produces them or uint8.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Samples this far out (in standard deviations) decode to noise; more is a typo.
MAX_TEMPERATURE = 2.0
# More steps than this is a typo, not an animation: each step is a decoder call.
MAX_INTERPOLATION_STEPS = 1000
# The enlargement is for display; the output grows with factor**2.
MAX_UPSCALE = 16
# Below these, the angle between two latents is not well defined and slerp's
# 1/sin(omega) blows up, so interpolation falls back to a straight line.
_MIN_SIN_OMEGA = 1e-6
_MIN_NORM = 1e-12
_METHODS = ("slerp", "linear")


# ---------------------------------------------------------------------------
# Sampling and interpolation


def sample_latents(
    n: int, latent_dim: int, seed: int | None = None, temperature: float = 1.0
) -> np.ndarray:
    """Draws latent vectors from the standard normal prior.

    Args:
        n: Number of vectors, at least 1.
        latent_dim: Length of each vector, at least 1.
        seed: Seed for ``np.random.default_rng``; the same seed gives the same
            vectors (and a larger ``n`` extends a smaller one). None: fresh
            randomness.
        temperature: Standard deviation of the draws, 0 to MAX_TEMPERATURE. Below 1
            the samples stay nearer the centre of the latent space, where the
            decoder has seen the most images: plainer but more dog-like.

    Returns:
        ``(n, latent_dim)`` float32 array: ``temperature`` times
        ``default_rng(seed).standard_normal``, rounded to float32.

    Raises:
        ValueError: If ``n`` or ``latent_dim`` is not a positive integer, the
            seed is not a non-negative integer, or the temperature is out of range.
    """
    n = _check_int("n", n, minimum=1)
    latent_dim = _check_int("latent_dim", latent_dim, minimum=1)
    temperature = check_temperature(temperature)
    if seed is not None:
        seed = _check_int("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((n, latent_dim))
    return (draws * temperature).astype(np.float32)


def sample_like_data(
    n: int, stats: dict[str, np.ndarray], seed: int | None = None, temperature: float = 1.0
) -> np.ndarray:
    """Draws latent vectors from a Gaussian fitted to the training set's latent means.

    A VAE's encoder rarely spreads real images over the whole N(0, I) prior:
    some directions hold far less variance than the prior gives them, and the
    directions are correlated. Decoding prior samples then lands in regions no
    training dog maps to, which come out as blotches. Sampling from the
    Gaussian with the mean and covariance of the encoded training set (an
    "ex-post density estimate", Ghosh et al. 2020) stays where the dogs are.

    Args:
        n: Number of vectors, at least 1.
        stats: ``{"mean", "components", "variance"}`` of the training set's latent
            means, as ``latent_statistics`` returns them (a run's latent_stats.npz).
        seed: As in :func:`sample_latents`; the same seed uses the same draws.
        temperature: Scales the spread around the mean, 0 to MAX_TEMPERATURE.

    Returns:
        ``(n, latent_dim)`` float32 array: ``mean + (temperature * e * sqrt(variance))
        @ components`` for standard normal draws ``e``.

    Raises:
        ValueError: If the statistics are missing, malformed or not finite, or an
            argument is out of range.
    """
    n = _check_int("n", n, minimum=1)
    temperature = check_temperature(temperature)
    try:
        mean = np.asarray(stats["mean"], dtype=np.float64)
        components = np.asarray(stats["components"], dtype=np.float64)
        variance = np.asarray(stats["variance"], dtype=np.float64)
    except (KeyError, TypeError):
        raise ValueError(
            "sampling like the data needs the run's latent statistics (mean, components, variance)"
        ) from None
    if (
        mean.ndim != 1
        or components.ndim != 2
        or components.shape[1] != len(mean)
        or variance.shape != (len(components),)
    ):
        raise ValueError(
            f"latent statistics do not fit together: mean {mean.shape}, components "
            f"{components.shape}, variance {variance.shape}"
        )
    for name, array in (("mean", mean), ("components", components), ("variance", variance)):
        _finite_float64(name, array)
    if seed is not None:
        seed = _check_int("seed", seed, minimum=0)
    draws = np.random.default_rng(seed).standard_normal((n, len(components)))
    spread = temperature * np.sqrt(np.maximum(variance, 0.0))
    return (mean + (draws * spread) @ components).astype(np.float32)


def sample_near_data(
    n: int, stats: dict[str, np.ndarray], seed: int | None = None, temperature: float = 1.0
) -> np.ndarray:
    """Draws latent vectors from the posteriors of randomly chosen training images.

    Each draw picks one of the run's stored training codes (``points``) and
    samples its posterior N(z_mean, exp(z_log_var)): a draw from the aggregate
    posterior, the distribution the decoder was trained on. The decoded images
    are variations of training dogs, so they look far more like dogs than
    draws from the prior or from one Gaussian over the codes, which land
    between the dogs; the nearest-training-image check shows how close each
    one stays to a photo.

    Args:
        n: Number of vectors, at least 1.
        stats: A run's latent statistics with ``points`` and ``point_log_vars``
            (``latent_statistics`` given the log-variances).
        seed: As in :func:`sample_latents`: the same seed makes the same draws.
        temperature: Scales each posterior's spread, 0 to MAX_TEMPERATURE; at 0
            every draw is a stored training code itself.

    Returns:
        ``(n, latent_dim)`` float32 array.

    Raises:
        ValueError: If the statistics lack the points or their log-variances,
            do not fit together or are not finite, or an argument is out of range.
    """
    n = _check_int("n", n, minimum=1)
    temperature = check_temperature(temperature)
    if not isinstance(stats, dict) or "point_log_vars" not in stats or "points" not in stats:
        raise ValueError(
            "sampling near the training dogs needs the run's training codes and their "
            "log-variances, which runs saved before this sampler lack; `python -m dogvae stats "
            "RUN DATA` records them"
        )
    points = _finite_float64("points", np.asarray(stats["points"], dtype=np.float64))
    log_vars = _finite_float64("point_log_vars", np.asarray(stats["point_log_vars"], np.float64))
    if points.ndim != 2 or len(points) < 1 or log_vars.shape != points.shape:
        raise ValueError(
            f"latent statistics do not fit together: points {points.shape}, "
            f"point_log_vars {log_vars.shape}"
        )
    if seed is not None:
        seed = _check_int("seed", seed, minimum=0)
    # Two streams, so that a larger n extends a smaller one with the same seed.
    choices, noise = np.random.default_rng(seed).spawn(2)
    chosen = choices.integers(0, len(points), n)
    draws = noise.standard_normal((n, points.shape[1]))
    spread = temperature * np.exp(0.5 * np.clip(log_vars[chosen], -30.0, 30.0))
    return (points[chosen] + draws * spread).astype(np.float32)


# The ways to draw latent points, the most dog-like first (see the functions above).
SAMPLERS = ("near", "data", "prior")


def samplers_for(stats: dict[str, np.ndarray] | None) -> list[str]:
    """The samplers a run's latent statistics allow, the most dog-like first."""
    if stats is None:
        return ["prior"]
    return list(SAMPLERS) if "point_log_vars" in stats else ["data", "prior"]


def draw_latents(
    n: int,
    latent_dim: int,
    stats: dict[str, np.ndarray] | None,
    sampler: str = "auto",
    seed: int | None = None,
    temperature: float = 1.0,
) -> tuple[np.ndarray, str]:
    """Latent points drawn the way ``sampler`` says, for a run with these statistics.

    Args:
        n, seed, temperature: As in :func:`sample_latents`.
        latent_dim: The model's latent size; the statistics must have it too.
        stats: The run's latent statistics, or None if it has none.
        sampler: "near" (:func:`sample_near_data`), "data" (:func:`sample_like_data`),
            "prior" (:func:`sample_latents`) or "auto": the first that ``stats`` allows.

    Returns:
        ``((n, latent_dim) float32 points, the sampler used)``.

    Raises:
        ValueError: If the sampler is unknown or the statistics do not allow it
            or do not fit the latent size.
    """
    if sampler != "auto" and sampler not in SAMPLERS:
        raise ValueError(f"sampler must be auto or one of {', '.join(SAMPLERS)}, got {sampler!r}")
    allowed = samplers_for(stats)
    chosen = allowed[0] if sampler == "auto" else sampler
    if chosen not in allowed:
        needs = "latent statistics" if stats is None else "training codes' log-variances"
        raise ValueError(
            f"the {chosen!r} sampler needs the run's {needs} (latent_stats.npz, which "
            f"`python -m dogvae stats RUN DATA` records); this run allows: {', '.join(allowed)}"
        )
    if stats is not None and np.shape(stats.get("mean")) != (latent_dim,):
        raise ValueError(
            f"the latent statistics are for {np.shape(stats.get('mean'))} latents, "
            f"the model has {latent_dim}"
        )
    if chosen == "near":
        return sample_near_data(n, stats, seed, temperature), chosen
    if chosen == "data":
        return sample_like_data(n, stats, seed, temperature), chosen
    return sample_latents(n, latent_dim, seed, temperature), chosen


def lerp(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Linear interpolation ``(1 - t) * a + t * b``.

    This form (rather than ``a + t * (b - a)``) returns ``a`` and ``b``
    bit-exactly at ``t = 0`` and ``t = 1``.

    Args:
        a: Start vector, shape ``(d,)``.
        b: End vector, same shape as ``a``.
        t: Position, a scalar or a 1-D array of positions. Values outside
            [0, 1] extrapolate.

    Returns:
        ``(d,)`` for a scalar ``t``, ``(len(t), d)`` for an array. The dtype is
        float32 for float32 (or integer) inputs, float64 if either is float64.

    Raises:
        ValueError: If the vectors are not 1-D of the same length, or contain
            NaN or infinity, or ``t`` is not a finite scalar or 1-D array.
    """
    a64, b64, dtype = _check_pair(a, b)
    ts, scalar = _check_t(t)
    result = (1.0 - ts)[:, None] * a64 + ts[:, None] * b64
    result = result.astype(dtype)
    return result[0] if scalar else result


def slerp(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Spherical interpolation between two latent vectors.

    Uses the standard formula on the vectors themselves,
    ``sin((1 - t) w) / sin(w) * a + sin(t w) / sin(w) * b`` with ``w`` the angle
    between them. The path follows the arc between the two directions, so for
    vectors of equal norm every point keeps that norm (a straight line would
    pass closer to the origin, where a Gaussian prior has few samples). For
    unequal norms the norm changes smoothly from ``|a|`` to ``|b|``. The
    endpoints are exact: ``t = 0`` gives ``a``, ``t = 1`` gives ``b``.

    When the directions are nearly parallel or opposite (``sin(w)`` below 1e-6)
    or either vector is (almost) zero, the arc is not defined and this falls
    back to :func:`lerp`.

    Args:
        a: Start vector, shape ``(d,)``.
        b: End vector, same shape as ``a``.
        t: Position, a scalar or a 1-D array of positions.

    Returns:
        ``(d,)`` for a scalar ``t``, ``(len(t), d)`` for an array; dtype as in
        :func:`lerp`.

    Raises:
        ValueError: As :func:`lerp`.
    """
    a64, b64, dtype = _check_pair(a, b)
    ts, scalar = _check_t(t)
    norm_a = float(np.linalg.norm(a64))
    norm_b = float(np.linalg.norm(b64))
    if norm_a < _MIN_NORM or norm_b < _MIN_NORM:
        return lerp(a, b, t)
    cos_omega = float(np.clip(np.dot(a64 / norm_a, b64 / norm_b), -1.0, 1.0))
    omega = math.acos(cos_omega)
    sin_omega = math.sin(omega)
    if sin_omega < _MIN_SIN_OMEGA:
        return lerp(a, b, t)
    weight_a = np.sin((1.0 - ts) * omega) / sin_omega
    weight_b = np.sin(ts * omega) / sin_omega
    result = weight_a[:, None] * a64 + weight_b[:, None] * b64
    result = result.astype(dtype)
    return result[0] if scalar else result


def interpolate(a: np.ndarray, b: np.ndarray, steps: int = 8, method: str = "slerp") -> np.ndarray:
    """Evenly spaced latent vectors from ``a`` to ``b``, ready for the decoder.

    Args:
        a: Start vector, shape ``(d,)``.
        b: End vector, same shape as ``a``.
        steps: Number of vectors including both ends, 2 to 1000.
        method: ``"slerp"`` (spherical, see :func:`slerp`) or ``"linear"``.

    Returns:
        ``(steps, d)`` float32 array whose first row is ``a`` and last row is
        ``b`` (exactly, as float32).

    Raises:
        ValueError: If ``steps`` or ``method`` is invalid, or the vectors are
            not 1-D of the same length.
    """
    steps = _check_int("steps", steps, minimum=2, maximum=MAX_INTERPOLATION_STEPS)
    if method not in _METHODS:
        raise ValueError(f"method must be 'slerp' or 'linear', got {method!r}")
    _check_pair(a, b)
    ts = np.linspace(0.0, 1.0, steps)
    rows = slerp(a, b, ts) if method == "slerp" else lerp(a, b, ts)
    rows = rows.astype(np.float32)
    # Both formulas are exact at t = 0 and 1; pinning the ends makes that a
    # guarantee rather than a property of the arithmetic.
    rows[0] = np.asarray(a, dtype=np.float32)
    rows[-1] = np.asarray(b, dtype=np.float32)
    return rows


# ---------------------------------------------------------------------------
# Directions and traversals


def pca_directions(
    latents: np.ndarray, k: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal directions of a set of latent vectors (usually encoder means).

    The directions along which encoded images vary most are often more
    meaningful to move along than the raw latent axes.

    Args:
        latents: ``(n, d)`` array with at least two rows.
        k: Number of directions to return, 1 to ``min(n, d)``. None (default):
            ``min(n, d)``, which is ``d`` whenever there are at least ``d``
            vectors.

    Returns:
        ``(mean, components, explained_variance)``: the ``(d,)`` mean, a
        ``(k, d)`` array of unit-length directions sorted by variance
        (largest first), and the ``(k,)`` variance along each (divided by
        ``n - 1``), all float32. Each direction's sign is fixed so that its
        largest-magnitude entry is positive, so the same data always gives the
        same directions.

    Raises:
        ValueError: If ``latents`` is not a finite 2-D array with at least two
            rows, or ``k`` is out of range.
    """
    data = np.asarray(latents)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 1:
        raise ValueError(
            "latents must be a 2-D array (n, latent_dim) with at least 2 rows, "
            f"got shape {data.shape}"
        )
    data = _finite_float64("latents", data)
    n, latent_dim = data.shape
    limit = min(n, latent_dim)
    k = limit if k is None else _check_int("k", k, minimum=1, maximum=limit)
    mean = data.mean(axis=0)
    _, singular_values, vt = np.linalg.svd(data - mean, full_matrices=False)
    components = vt[:k]
    # SVD signs are arbitrary; fixing them keeps sliders pointing the same way
    # from one call (and one machine) to the next.
    largest = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(k), largest])
    signs[signs == 0] = 1.0
    components = components * signs[:, None]
    explained_variance = singular_values[:k] ** 2 / (n - 1)
    return (
        mean.astype(np.float32),
        components.astype(np.float32),
        explained_variance.astype(np.float32),
    )


def traversal(
    center: np.ndarray, direction: np.ndarray, values: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Points along a line through latent space: ``center + v * direction``.

    Args:
        center: ``(d,)`` starting point, e.g. an encoded image or the PCA mean.
        direction: ``(d,)`` direction, e.g. a PCA component or :func:`axis`.
        values: 1-D sequence of offsets, at least one.

    Returns:
        ``(len(values), d)`` float32 array, one row per value.

    Raises:
        ValueError: If the shapes do not match or any input is not finite.
    """
    center64, direction64, _ = _check_pair(center, direction, names=("center", "direction"))
    offsets = np.asarray(values)
    if offsets.ndim != 1 or offsets.size < 1:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {offsets.shape}")
    offsets = _finite_float64("values", offsets)
    return (center64[None, :] + offsets[:, None] * direction64[None, :]).astype(np.float32)


def axis(latent_dim: int, index: int) -> np.ndarray:
    """One-hot vector along latent axis ``index``, for :func:`traversal`.

    Args:
        latent_dim: Length of the vector, at least 1.
        index: Axis, 0 to ``latent_dim - 1``.

    Returns:
        ``(latent_dim,)`` float32 array with a single 1.

    Raises:
        ValueError: If ``index`` is outside ``0 .. latent_dim - 1``.
    """
    latent_dim = _check_int("latent_dim", latent_dim, minimum=1)
    index = _check_int("index", index, minimum=0, maximum=latent_dim - 1)
    vector = np.zeros(latent_dim, dtype=np.float32)
    vector[index] = 1.0
    return vector


# ---------------------------------------------------------------------------
# Images


MAX_SLIDERS = 8
MAX_SCATTER_POINTS = 2_000


@dataclass(frozen=True)
class SliderBasis:
    """The axes the sliders move along: z = origin + residual + sum(value_i * scale_i * dir_i).

    For small latents the axes are the latent dimensions themselves (origin 0,
    scale 1). For larger ones they are the principal directions of the training
    set's latent means, so the first sliders change what varies most among real
    dogs, scaled so that -3..3 spans three standard deviations, around the mean
    dog. ``residual`` carries what the sliders do not show (of an encoded photo).
    """

    origin: np.ndarray  # (d,)
    directions: np.ndarray  # (k, d), orthonormal rows
    scales: np.ndarray  # (k,)
    labels: tuple[str, ...]

    def to_point(self, values: Sequence[float], residual: np.ndarray | None = None) -> np.ndarray:
        """The latent point for slider ``values`` (k,), plus an optional residual (d,)."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != self.scales.shape:
            raise ValueError(f"expected {len(self.scales)} slider values, got {values.shape}")
        point = self.origin + (values * self.scales) @ self.directions
        if residual is not None:
            point = point + residual
        return point.astype(np.float32)

    def from_point(self, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slider values (k,) and the residual (d,) that together give ``point`` back."""
        offset = np.asarray(point, dtype=np.float64) - self.origin
        coordinates = self.directions @ offset
        residual = offset - coordinates @ self.directions
        return coordinates / self.scales, residual


def slider_basis(
    latent_dim: int, pca: dict[str, np.ndarray] | None = None, count: int = MAX_SLIDERS
) -> SliderBasis:
    """Slider axes: latent dimensions when they fit in ``count`` sliders, else PCA directions.

    Args:
        latent_dim: Size of the latent space.
        pca: ``{"mean", "components", "variance"}`` of the training set's latent
            means (see ``latent_statistics``), or None to use the first ``count`` axes.
        count: At most this many sliders.
    """
    _check_int("latent_dim", latent_dim, 1)
    if latent_dim <= count or pca is None:
        shown = min(latent_dim, count)
        return SliderBasis(
            origin=np.zeros(latent_dim),
            directions=np.eye(latent_dim)[:shown],
            scales=np.ones(shown),
            labels=tuple(f"z{index}" for index in range(1, shown + 1)),
        )
    components = np.asarray(pca["components"], dtype=np.float64)[:count]
    variance = np.asarray(pca["variance"], dtype=np.float64)[: len(components)]
    if components.shape[1] != latent_dim:
        raise ValueError(
            f"the PCA directions have {components.shape[1]} dimensions, the model {latent_dim}"
        )
    return SliderBasis(
        origin=np.asarray(pca["mean"], dtype=np.float64),
        directions=components,
        scales=np.sqrt(np.maximum(variance, 1e-12)),
        labels=tuple(f"direction {index}" for index in range(1, len(components) + 1)),
    )


def latent_statistics(
    z_means: np.ndarray, z_log_vars: np.ndarray | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """What a run keeps about its training set's latent codes, for sliders, sampling and plots.

    Args:
        z_means: ``(n, latent_dim)`` posterior means of the training images, n at least 2.
        z_log_vars: Their posterior log-variances, the same shape, or None.
        seed: Seed of the random subset kept as ``points``.

    Returns:
        ``mean``, ``components`` and ``variance`` (PCA, all directions);
        ``points``: up to MAX_SCATTER_POINTS of the means themselves (a random
        subset), for a scatter plot of 2-D latents and for
        :func:`sample_near_data`; with ``z_log_vars``, also ``point_log_vars``:
        the log-variances of those same points.
    """
    z_means = np.asarray(z_means, dtype=np.float32)
    if z_means.ndim != 2 or len(z_means) < 2:
        raise ValueError(f"need at least 2 latent means (n, d), got shape {z_means.shape}")
    if z_log_vars is not None:
        z_log_vars = np.asarray(z_log_vars, dtype=np.float32)
        if z_log_vars.shape != z_means.shape:
            raise ValueError(
                f"latent log-variances {z_log_vars.shape} do not match the means {z_means.shape}"
            )
    mean, components, variance = pca_directions(z_means)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(z_means))[:MAX_SCATTER_POINTS])
    stats = {
        "mean": mean.astype(np.float32),
        "components": components.astype(np.float32),
        "variance": variance.astype(np.float32),
        "points": z_means[keep],
    }
    if z_log_vars is not None:
        stats["point_log_vars"] = z_log_vars[keep]
    return stats


def nearest_images(
    queries: np.ndarray, pool: np.ndarray, chunk: int = 2_048
) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the index of the closest pool image by pixel distance.

    The memorisation check: a generated dog that is nearly a training photo
    means the model copies instead of generalising.

    Args:
        queries: (n, H, W, C) images, uint8 or float in [0, 1].
        pool: (N, H, W, C) images of the same shape, e.g. the training set (uint8).
        chunk: Pool images compared at a time, so memory stays bounded for large pools.

    Returns:
        (indices (n,), RMS distances (n,) on a 0..1 pixel scale).
    """
    queries = to_uint8(np.asarray(queries)).reshape(len(queries), -1).astype(np.float32)
    if len(pool) == 0:
        raise ValueError("the pool of images to search is empty")
    flat_pool = np.asarray(pool).reshape(len(pool), -1)
    if flat_pool.shape[1] != queries.shape[1]:
        raise ValueError(
            f"query images have {queries.shape[1]} values each, pool images {flat_pool.shape[1]}"
        )
    best = np.full(len(queries), np.inf)
    index = np.zeros(len(queries), dtype=np.int64)
    query_norms = np.einsum("ij,ij->i", queries, queries)
    for start in range(0, len(flat_pool), chunk):
        block = flat_pool[start : start + chunk].astype(np.float32)
        # |q - p|^2 = |q|^2 - 2 q.p + |p|^2, one matrix product per chunk.
        distances = (
            query_norms[:, None] - 2 * queries @ block.T + np.einsum("ij,ij->i", block, block)
        )
        column = np.argmin(distances, axis=1)
        value = distances[np.arange(len(queries)), column]
        better = value < best
        best[better] = value[better]
        index[better] = start + column[better]
    rms = np.sqrt(np.maximum(best, 0) / queries.shape[1]) / 255.0
    return index, rms


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Converts float images in [0, 1] to uint8, rounding to the nearest level.

    Values outside [0, 1] are clipped. uint8 input is returned unchanged (the
    same object).

    Args:
        images: Float array of any shape, or uint8.

    Returns:
        uint8 array of the same shape.

    Raises:
        ValueError: If the array is neither floating point nor uint8 (an integer
            array could mean 0..1 or 0..255), or contains NaN.
    """
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"images must be float in [0, 1] or uint8, got dtype {array.dtype}; "
            "convert with .astype(np.float32) / 255 or .astype(np.uint8) first"
        )
    if np.isnan(array).any():
        raise ValueError("images contain NaN; the model that produced them has probably diverged")
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def image_grid(
    images: np.ndarray, cols: int | None = None, pad: int = 2, pad_value: int = 255
) -> np.ndarray:
    """Tiles a batch of images into one image, row by row.

    Args:
        images: ``(N, H, W, C)`` with C 1 or 3, or ``(N, H, W)`` (treated as
            C = 1); float in [0, 1] or uint8. N at least 1.
        cols: Images per row, at least 1. None: ``ceil(sqrt(N))``.
        pad: Pixels of border around and between the images, 0 or more.
        pad_value: Gray level (0-255) of the border and of empty cells in the
            last row.

    Returns:
        uint8 image of shape ``(rows * H + pad * (rows + 1),
        cols * W + pad * (cols + 1), C)`` with ``rows = ceil(N / cols)``.

    Raises:
        ValueError: For a wrong shape or out-of-range ``cols``, ``pad`` or
            ``pad_value``.
    """
    batch = to_uint8(_as_batch(images))
    count, height, width, channels = batch.shape
    if cols is None:
        cols = math.ceil(math.sqrt(count))
    cols = _check_int("cols", cols, minimum=1)
    pad = _check_int("pad", pad, minimum=0)
    pad_value = _check_int("pad_value", pad_value, minimum=0, maximum=255)
    rows = math.ceil(count / cols)
    grid = np.full(
        (rows * height + pad * (rows + 1), cols * width + pad * (cols + 1), channels),
        pad_value,
        dtype=np.uint8,
    )
    for i, image in enumerate(batch):
        row, col = divmod(i, cols)
        top = pad + row * (height + pad)
        left = pad + col * (width + pad)
        grid[top : top + height, left : left + width] = image
    return grid


def image_strip(images: np.ndarray, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """All images side by side in one row: :func:`image_grid` with ``cols = N``.

    Args:
        images: ``(N, H, W[, C])`` batch, as for :func:`image_grid`.
        pad: Border in pixels around and between the images.
        pad_value: Gray level (0-255) of the border.

    Returns:
        uint8 image of shape ``(H + 2 * pad, N * W + pad * (N + 1), C)``.
    """
    batch = _as_batch(images)
    return image_grid(batch, cols=batch.shape[0], pad=pad, pad_value=pad_value)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Enlarges an image by repeating each pixel ``factor`` times in each direction.

    Nearest-neighbour keeps the pixels sharp, so a 64x64 sample shows what the
    model made instead of a blur of it.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, any dtype.
        factor: Enlargement, 1 to 16.

    Returns:
        ``(H * factor, W * factor[, C])`` array of the same dtype.

    Raises:
        ValueError: If the image is not 2-D or 3-D, or ``factor`` is out of range.
    """
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {array.shape}")
    factor = _check_int("factor", factor, minimum=1, maximum=MAX_UPSCALE)
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    """Encodes one image as PNG.

    Args:
        image: ``(H, W)``, ``(H, W, 1)`` (grayscale) or ``(H, W, 3)`` (RGB order)
            array, uint8 or float in [0, 1].

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: If the array is not a single grayscale or RGB image.
    """
    frame = _as_frame(image, "image")
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def gif_bytes(
    frames: Sequence[np.ndarray] | np.ndarray,
    duration_ms: int = 120,
    loop: int = 0,
    bounce: bool = False,
) -> bytes:
    """Encodes frames as an animated GIF.

    Grayscale frames are stored exactly (mode ``"L"``). RGB frames are reduced
    to a palette of at most 255 colours per frame (exact when a frame has no
    more colours than that; median cut otherwise).

    Every frame is kept, so a viewer shows as many frames as were given.
    Pillow would merge a frame identical to the one before it into a single
    longer frame; to prevent that, such a frame gets the lowest bit of one
    value of its top-left pixel flipped (a change of 1/255 in one channel,
    invisible). Frames may therefore differ from the input by that one level.

    Args:
        frames: Sequence of ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` arrays of
            the same shape, or one ``(N, H, W[, C])`` array; float in [0, 1] or
            uint8. At least one frame.
        duration_ms: Display time of each frame, 10 to 655350 ms (GIFs store
            hundredths of a second, so it is rounded down to a multiple of 10).
        loop: Number of times to repeat; 0 (default) loops forever.
        bounce: Play forwards then backwards: the frames are followed by the
            same frames reversed, without repeating the last and first, so
            ``N`` frames become ``2N - 2`` (a single frame stays one).

    Returns:
        The GIF file's bytes.

    Raises:
        ValueError: If there are no frames, their shapes differ or are not
            images, or ``duration_ms`` or ``loop`` is out of range.
    """
    stack = _as_frames(frames)
    duration_ms = _check_int("duration_ms", duration_ms, minimum=10, maximum=655_350)
    loop = _check_int("loop", loop, minimum=0, maximum=65_535)
    if bounce:
        stack = stack + stack[-2:0:-1]
    pictures = _gif_pictures(stack)
    buffer = io.BytesIO()
    pictures[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=pictures[1:],
        duration=duration_ms,
        loop=loop,
        optimize=False,
        disposal=2,
    )
    return buffer.getvalue()


def save_image(path: str | os.PathLike, image_or_frames: np.ndarray | Sequence[np.ndarray]) -> Path:
    """Writes an image (``.png``) or an animation (``.gif``), chosen by suffix.

    For ``.png`` give one image; for ``.gif`` give frames as accepted by
    :func:`gif_bytes`, or a single image (written as a one-frame GIF). A 3-D
    array whose last axis is 1 or 3 is one image; any other 3-D array is a
    stack of grayscale frames.

    The file is written to a temporary name in the same folder and then
    renamed, so a reader never sees half a file and an old file is only
    replaced by a complete new one.

    Args:
        path: Output file, ending in ``.png`` or ``.gif`` (any case).
        image_or_frames: The image or frames, float in [0, 1] or uint8.

    Returns:
        The path written, as a ``Path``.

    Raises:
        ValueError: If the suffix is not ``.png`` or ``.gif``, or the data does
            not fit it.
        FileNotFoundError: If the folder to write into does not exist.
        NotADirectoryError: If the parent path is a file.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".png", ".gif"):
        raise ValueError(f"output must end in .png or .gif, got {str(target)!r}")
    parent = target.parent
    if not parent.exists():
        raise FileNotFoundError(
            f"folder {str(parent)!r} does not exist; create it first or choose another path"
        )
    if not parent.is_dir():
        raise NotADirectoryError(f"{str(parent)!r} is a file, not a folder")
    if suffix == ".png":
        if not isinstance(image_or_frames, np.ndarray) or image_or_frames.ndim == 4:
            raise ValueError(
                "a .png holds one image (H, W) or (H, W, C); for several images "
                "combine them with image_grid() or save a .gif"
            )
        data = png_bytes(image_or_frames)
    else:
        data = gif_bytes(image_or_frames)
    _write_atomically(target, data)
    return target


# ---------------------------------------------------------------------------
# Helpers


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    # bool is an int subclass, but steps=True is a mistake, not 1. ValueError
    # rather than TypeError: the UI and CLI turn ValueError into a message.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        expected = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {expected}, got {value}")
    return value


def check_temperature(temperature: object) -> float:
    """``temperature`` as a float, or ValueError unless it is a number from 0 to MAX_TEMPERATURE."""
    if (
        not isinstance(temperature, numbers.Real)
        or isinstance(temperature, bool)
        or not 0.0 <= float(temperature) <= MAX_TEMPERATURE
    ):
        raise ValueError(f"temperature must be from 0 to {MAX_TEMPERATURE:g}, got {temperature!r}")
    return float(temperature)


def _finite_float64(name: str, array: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)):
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return array


def _check_pair(
    a: np.ndarray, b: np.ndarray, names: tuple[str, str] = ("a", "b")
) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """Validates two vectors; returns them as float64 and the dtype to give back."""
    first, second = np.asarray(a), np.asarray(b)
    if first.ndim != 1 or first.shape != second.shape or first.size == 0:
        raise ValueError(
            f"{names[0]} and {names[1]} must be 1-D latent vectors of the same length, "
            f"got shapes {first.shape} and {second.shape}"
        )
    dtype = np.result_type(first.dtype, second.dtype, np.float32)
    return _finite_float64(names[0], first), _finite_float64(names[1], second), dtype


def _check_t(t: float | np.ndarray) -> tuple[np.ndarray, bool]:
    """Returns the positions as a 1-D float64 array and whether ``t`` was a scalar."""
    ts = np.asarray(t)
    if ts.ndim > 1:
        raise ValueError(f"t must be a number or a 1-D array of numbers, got shape {ts.shape}")
    return _finite_float64("t", np.atleast_1d(ts)), ts.ndim == 0


def _as_frame(image: np.ndarray, name: str) -> np.ndarray:
    """One image as uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB)."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or array.size == 0:
        raise ValueError(
            f"{name} must be (H, W), (H, W, 1) or (H, W, 3), got shape {np.shape(image)}"
        )
    return np.ascontiguousarray(to_uint8(array))


def _as_batch(images: np.ndarray) -> np.ndarray:
    """A batch as ``(N, H, W, C)`` with C 1 or 3, dtype untouched."""
    batch = np.asarray(images)
    if batch.ndim == 3:
        batch = batch[..., None]
    if batch.ndim != 4 or batch.shape[3] not in (1, 3) or 0 in batch.shape:
        raise ValueError(
            "images must be a non-empty batch (N, H, W) or (N, H, W, C) with C 1 or 3, "
            f"got shape {batch.shape}"
        )
    return batch


def _as_frames(frames: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """Frames as a list of uint8 ``(H, W)`` or ``(H, W, 3)`` arrays of one shape."""
    if isinstance(frames, np.ndarray):
        is_single_image = frames.ndim == 2 or (frames.ndim == 3 and frames.shape[2] in (1, 3))
        items = [frames] if is_single_image else list(frames)
    else:
        items = list(frames)
    if not items:
        raise ValueError("frames must contain at least one image, got none")
    stack = [_as_frame(item, f"frame {i}") for i, item in enumerate(items)]
    shapes = {frame.shape for frame in stack}
    if len(shapes) > 1:
        raise ValueError(f"all frames must have the same shape, got {sorted(shapes)}")
    return stack


def _gif_pictures(stack: list[np.ndarray]) -> list[Image.Image]:
    """Pillow images for the GIF writer, each different from the one before."""
    pictures: list[Image.Image] = []
    previous: np.ndarray | None = None
    for frame in stack:
        if frame.ndim == 2:
            shown = frame
            if previous is not None and np.array_equal(shown, previous):
                shown = shown.copy()
                shown[0, 0] ^= 1
            picture = Image.fromarray(shown)
        else:
            # Quantizing here rather than leaving it to Pillow frees palette
            # index 255 for the nudge, and lets us compare frames as they will
            # be shown (two different inputs can quantize to the same frame).
            picture = Image.fromarray(frame).quantize(colors=255, method=Image.Quantize.MEDIANCUT)
            shown = np.asarray(picture.convert("RGB"))
            if previous is not None and np.array_equal(shown, previous):
                picture, shown = _nudge_top_left(picture, shown)
        pictures.append(picture)
        previous = shown
    return pictures


def _nudge_top_left(picture: Image.Image, shown: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Gives the top-left pixel its own palette entry, one level off in red."""
    palette = list(picture.getpalette() or [])[: 255 * 3]
    palette += [0] * (255 * 3 - len(palette))
    red, green, blue = (int(value) for value in shown[0, 0])
    palette += [red ^ 1, green, blue]
    nudged = picture.copy()
    nudged.putpalette(palette)
    nudged.putpixel((0, 0), 255)
    shown = shown.copy()
    shown[0, 0, 0] = red ^ 1
    return nudged, shown


def _write_atomically(target: Path, data: bytes) -> None:
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as a
    # plain open() would (tempfile would make the final file private, 0o600).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
