"""Latent-space maths, with NumPy only: interpolation, principal directions, traversals,
the sliders' axes and the statistics a run keeps of its training set's latent codes.

Everything here works on plain arrays, so it can be used (and tested) without a
model and without TensorFlow. Latent vectors are 1-D arrays of length ``latent_dim``;
batches of them are ``(n, latent_dim)`` float32 arrays, ready for the decoder. The
samplers are in ``dogvae.samplers``, image output in ``dogvae.images``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dogvae.checks import check_int, finite_float64
from dogvae.latent_stats import LatentStats

# More steps than this is a typo, not an animation: each step is a decoder call.
MAX_INTERPOLATION_STEPS = 1000
MAX_SLIDERS = 8
MAX_SCATTER_POINTS = 2_000  # training codes kept in the statistics
# Below these, the angle between two latents is not well defined and slerp's
# 1/sin(omega) blows up, so interpolation falls back to a straight line.
_MIN_SIN_OMEGA = 1e-6
_MIN_NORM = 1e-12
METHODS = ("slerp", "linear")  # interpolation methods, most natural for a Gaussian latent first


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
    steps = check_int("steps", steps, minimum=2, maximum=MAX_INTERPOLATION_STEPS)
    if method not in METHODS:
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
    data = finite_float64("latents", data)
    n, latent_dim = data.shape
    limit = min(n, latent_dim)
    k = limit if k is None else check_int("k", k, minimum=1, maximum=limit)
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
    offsets = finite_float64("values", offsets)
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
    latent_dim = check_int("latent_dim", latent_dim, minimum=1)
    index = check_int("index", index, minimum=0, maximum=latent_dim - 1)
    vector = np.zeros(latent_dim, dtype=np.float32)
    vector[index] = 1.0
    return vector


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
    latent_dim: int, stats: LatentStats | None = None, count: int = MAX_SLIDERS
) -> SliderBasis:
    """Slider axes: latent dimensions when they fit in ``count`` sliders, else PCA directions.

    Args:
        latent_dim: Size of the latent space.
        stats: The run's latent statistics (their principal directions), or None to
            use the first ``count`` axes.
        count: At most this many sliders.

    Raises:
        ValueError: If the statistics are for another latent size.
    """
    check_int("latent_dim", latent_dim, 1)
    if latent_dim <= count or stats is None:
        shown = min(latent_dim, count)
        return SliderBasis(
            origin=np.zeros(latent_dim),
            directions=np.eye(latent_dim)[:shown],
            scales=np.ones(shown),
            labels=tuple(f"z{index}" for index in range(1, shown + 1)),
        )
    if stats.latent_dim != latent_dim:
        raise ValueError(
            f"the PCA directions have {stats.latent_dim} dimensions, the model {latent_dim}"
        )
    components = stats.components.astype(np.float64)[:count]
    variances = stats.variances.astype(np.float64)[: len(components)]
    return SliderBasis(
        origin=stats.mean.astype(np.float64),
        directions=components,
        scales=np.sqrt(np.maximum(variances, 1e-12)),
        labels=tuple(f"direction {index}" for index in range(1, len(components) + 1)),
    )


def latent_statistics(
    z_means: np.ndarray, z_log_vars: np.ndarray | None = None, seed: int = 0
) -> LatentStats:
    """What a run keeps about its training set's latent codes, for sliders, sampling and plots.

    Args:
        z_means: ``(n, latent_dim)`` posterior means of the training images, n at least 2.
        z_log_vars: Their posterior log-variances, the same shape, or None.
        seed: Seed of the random subset kept as ``points``.

    Returns:
        The principal directions of the means (all of them) with their variances; as
        ``points``, up to MAX_SCATTER_POINTS of the means themselves (a random subset),
        for a scatter plot of 2-D latents and for ``samplers.sample_near_data``; with
        ``z_log_vars``, also ``point_log_vars``: the log-variances of those same points.

    Raises:
        ValueError: If there are fewer than 2 means, or the log-variances do not match them.
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
    mean, components, variances = pca_directions(z_means)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(z_means))[:MAX_SCATTER_POINTS])
    return LatentStats(
        mean=mean,
        components=components,
        variances=variances,
        points=z_means[keep],
        point_log_vars=None if z_log_vars is None else z_log_vars[keep],
    )


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
    return finite_float64(names[0], first), finite_float64(names[1], second), dtype


def _check_t(t: float | np.ndarray) -> tuple[np.ndarray, bool]:
    """Returns the positions as a 1-D float64 array and whether ``t`` was a scalar."""
    ts = np.asarray(t)
    if ts.ndim > 1:
        raise ValueError(f"t must be a number or a 1-D array of numbers, got shape {ts.shape}")
    return finite_float64("t", np.atleast_1d(ts)), ts.ndim == 0
