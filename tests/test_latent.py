"""Tests for dogvae.latent: interpolation, PCA, traversals, slider axes and the latent
statistics; no model needed."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dogvae import latent
from dogvae.latent import (
    axis,
    interpolate,
    lerp,
    pca_directions,
    slerp,
    traversal,
)
from dogvae.samplers import sample_latents

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


@pytest.mark.parametrize(
    "module", ["dogvae.latent", "dogvae.latent_stats", "dogvae.samplers", "dogvae.images"]
)
def test_module_imports_without_heavy_dependencies(module):
    code = (
        f"import sys, {module}; "
        "print(any(m in sys.modules for m in ('tensorflow', 'keras', 'streamlit', 'cv2')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


# --- slider bases and latent statistics ------------------------------------------------


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
    assert stats.points.shape == (latent.MAX_SCATTER_POINTS, 2)
    assert stats.components.shape == (2, 2)
    with pytest.raises(ValueError, match="at least 2"):
        latent.latent_statistics(np.zeros((1, 2)))


def test_statistics_of_another_latent_size_are_refused():
    stats = latent.latent_statistics(np.random.default_rng(4).normal(size=(40, 10)))
    with pytest.raises(ValueError, match="dimensions"):
        latent.slider_basis(12, stats)
