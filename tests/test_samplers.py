"""Tests for dogvae.samplers: the prior, the training set's Gaussian, the training codes'
posteriors, and choosing between them; no model needed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dogvae import latent, samplers
from dogvae.samplers import sample_latents, sample_like_data


def test_sample_latents_shape_dtype_and_seed():
    first = sample_latents(5, 16, seed=7)
    assert first.shape == (5, 16)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, sample_latents(5, 16, seed=7))
    assert not np.array_equal(first, sample_latents(5, 16, seed=8))
    np.testing.assert_array_equal(first[:2], sample_latents(2, 16, seed=7))


def test_sample_latents_looks_standard_normal():
    values = sample_latents(2000, 8, seed=0)
    assert abs(values.mean()) < 0.05
    assert abs(values.std() - 1.0) < 0.05


@pytest.mark.parametrize(
    ("n", "latent_dim", "seed"), [(0, 4, None), (3, 0, None), (2.5, 4, None), (3, 4, -1)]
)
def test_sample_latents_rejects_bad_arguments(n, latent_dim, seed):
    with pytest.raises(ValueError, match="must be"):
        sample_latents(n, latent_dim, seed=seed)


def test_temperature_scales_the_same_draws():
    base = sample_latents(6, 8, seed=3)
    np.testing.assert_allclose(sample_latents(6, 8, seed=3, temperature=0.5), base * 0.5)
    assert not sample_latents(4, 8, seed=3, temperature=0.0).any()
    for bad in (-0.1, 2.5, float("nan"), "1", True):
        with pytest.raises(ValueError, match="temperature"):
            sample_latents(2, 8, seed=0, temperature=bad)


def test_sampling_like_the_data_matches_its_mean_and_covariance():
    # Correlated, shifted "latent means" in 3-D whose spread is far from N(0, I).
    rng = np.random.default_rng(0)
    mixing = np.array([[2.0, 0.0, 0.0], [1.0, 0.3, 0.0], [0.0, 0.0, 0.05]])
    z_means = rng.standard_normal((4000, 3)) @ mixing + np.array([1.0, -2.0, 0.5])
    stats = latent.latent_statistics(z_means)
    samples = sample_like_data(20_000, stats, seed=1)
    assert samples.shape == (20_000, 3) and samples.dtype == np.float32
    np.testing.assert_allclose(samples.mean(axis=0), z_means.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(np.cov(samples.T), np.cov(z_means.T), atol=0.08)
    np.testing.assert_array_equal(samples[:5], sample_like_data(5, stats, seed=1))
    colder = sample_like_data(20_000, stats, seed=1, temperature=0.5)
    np.testing.assert_allclose(colder - stats.mean, (samples - stats.mean) * 0.5, atol=1e-5)


def test_sampling_like_the_data_refuses_missing_or_broken_statistics():
    stats = latent.latent_statistics(np.random.default_rng(0).standard_normal((50, 4)))
    with pytest.raises(ValueError, match="latent statistics"):
        sample_like_data(3, None)
    with pytest.raises(ValueError, match="do not fit"):
        sample_like_data(3, replace(stats, mean=stats.mean[:2]))
    with pytest.raises(ValueError, match="NaN"):
        sample_like_data(3, replace(stats, variances=np.full(4, np.nan)))


def test_sampling_near_the_data_draws_from_the_stored_codes_posteriors():
    rng = np.random.default_rng(5)
    means = rng.normal(size=(3, 4)) * 10  # three codes far apart
    log_vars = np.log(np.array([[0.01], [0.04], [0.09]]) * np.ones((3, 4)))  # std 0.1, 0.2, 0.3
    stats = latent.latent_statistics(means, log_vars)
    np.testing.assert_array_equal(stats.point_log_vars, log_vars.astype(np.float32))
    samples = samplers.sample_near_data(30_000, stats, seed=2)
    assert samples.shape == (30_000, 4) and samples.dtype == np.float32
    # Each draw belongs to one code, with that code's own posterior spread.
    owner = np.argmin(((samples[:, None] - means[None]) ** 2).sum(axis=2), axis=1)
    assert np.bincount(owner, minlength=3).min() > 9_000  # codes chosen uniformly
    for index, std in enumerate((0.1, 0.2, 0.3)):
        mine = samples[owner == index]
        np.testing.assert_allclose(mine.mean(axis=0), means[index], atol=0.02)
        np.testing.assert_allclose(mine.std(axis=0), std, rtol=0.05)
    np.testing.assert_array_equal(samples[:5], samplers.sample_near_data(5, stats, seed=2))
    assert not np.array_equal(samples[:5], samplers.sample_near_data(5, stats, seed=3))
    at_zero = samplers.sample_near_data(10, stats, seed=2, temperature=0.0)
    assert all(any(np.allclose(row, code) for code in means) for row in at_zero)


def test_sampling_near_the_data_needs_the_codes_log_variances():
    means = np.random.default_rng(0).standard_normal((50, 4))
    with pytest.raises(ValueError, match="log-variances"):
        samplers.sample_near_data(3, latent.latent_statistics(means))
    stats = latent.latent_statistics(means, np.zeros_like(means))
    with pytest.raises(ValueError, match="do not fit"):
        samplers.sample_near_data(3, replace(stats, point_log_vars=stats.point_log_vars[:, :2]))
    with pytest.raises(ValueError, match="NaN"):
        samplers.sample_near_data(3, replace(stats, point_log_vars=np.full((50, 4), np.nan)))
    with pytest.raises(ValueError, match="do not match"):
        latent.latent_statistics(means, np.zeros((50, 3)))


def test_draw_latents_uses_the_best_sampler_a_run_allows():
    means = np.random.default_rng(0).standard_normal((50, 4))
    full = latent.latent_statistics(means, np.full_like(means, -2.0))
    older = latent.latent_statistics(means)
    assert samplers.samplers_for(full) == ["near", "data", "prior"]
    assert samplers.samplers_for(older) == ["data", "prior"]
    assert samplers.samplers_for(None) == ["prior"]
    for stats, best in ((full, "near"), (older, "data"), (None, "prior")):
        z, used = samplers.draw_latents(6, 4, stats, "auto", seed=1, temperature=0.7)
        assert used == best and z.shape == (6, 4)
        np.testing.assert_array_equal(z, samplers.draw_latents(6, 4, stats, best, 1, 0.7)[0])
    np.testing.assert_array_equal(
        samplers.draw_latents(6, 4, full, "near", 1)[0], samplers.sample_near_data(6, full, 1)
    )
    np.testing.assert_array_equal(
        samplers.draw_latents(6, 4, full, "data", 1)[0], sample_like_data(6, full, 1)
    )
    np.testing.assert_array_equal(
        samplers.draw_latents(6, 4, full, "prior", 1)[0], sample_latents(6, 4, 1)
    )
    with pytest.raises(ValueError, match="allows: data, prior"):
        samplers.draw_latents(2, 4, older, "near")
    with pytest.raises(ValueError, match="allows: prior"):
        samplers.draw_latents(2, 4, None, "data")
    with pytest.raises(ValueError, match="model has 5"):
        samplers.draw_latents(2, 5, full, "auto")
    with pytest.raises(ValueError, match="sampler must be"):
        samplers.draw_latents(2, 4, full, "posterior")


def test_the_sampler_names_and_words_live_once():
    assert list(samplers.SAMPLERS) == ["near", "data", "prior"]  # the most dog-like first
    assert samplers.SAMPLER_CHOICES == ("auto", "near", "data", "prior")
    for name, sampler in samplers.SAMPLERS.items():
        assert sampler.name == name and sampler.label and sampler.source and sampler.explanation
