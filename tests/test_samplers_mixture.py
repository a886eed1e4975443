"""The "mixture" sampler: EM, the choice of components on held-out codes, storage and sampling."""

import dataclasses

import numpy as np
import pytest

from dogvae import latent, mixture, samplers
from dogvae.latent_stats import LatentStats
from dogvae.mixture import fit_gaussian_mixture, select_gaussian_mixture, with_mixture

TRUE_MEANS = np.array([[-4.0, 0.0, 1.0], [3.0, 2.0, -1.0]])
TRUE_SPREADS = np.array([[0.5, 1.0, 0.3], [1.2, 0.4, 0.8]])


def two_clusters(n=1500, seed=0):
    """Codes from a known 2-component mixture (weights 0.3 / 0.7, diagonal covariances)."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    which = np.where(labels, 0, 1)
    return TRUE_MEANS[which] + TRUE_SPREADS[which] * rng.standard_normal((n, 3))


def test_em_recovers_a_known_two_component_mixture():
    for covariance in ("diag", "full"):
        fitted = fit_gaussian_mixture(two_clusters(), 2, covariance, seed=1)
        order = np.argsort(fitted.means[:, 0])
        np.testing.assert_allclose(fitted.weights[order], [0.3, 0.7], atol=0.03)
        np.testing.assert_allclose(fitted.means[order], TRUE_MEANS, atol=0.1)
        spreads = np.sqrt(np.einsum("kij,kij->ki", fitted.scale_tril, fitted.scale_tril))
        np.testing.assert_allclose(spreads[order], TRUE_SPREADS, rtol=0.1)
        assert fitted.covariance == covariance
    # Its density integrates to 1: a Monte Carlo check on a box around the data.
    fitted = fit_gaussian_mixture(two_clusters(), 2, "full")
    box = np.random.default_rng(2).uniform(-9, 9, (200_000, 3))
    assert np.exp(fitted.log_likelihood(box)).mean() * 18**3 == pytest.approx(1.0, rel=0.05)


def test_held_out_codes_choose_two_components_over_one_and_eight():
    chosen, scores = select_gaussian_mixture(two_clusters(), component_choices=(1, 2, 8))
    assert len(chosen.weights) == 2 and chosen.covariance == "diag"  # the true model
    by_choice = {(row["components"], row["covariance"]): row for row in scores}
    held_out = {key: row["held_out_log_likelihood"] for key, row in by_choice.items()}
    assert held_out[(2, "diag")] > held_out[(1, "diag")] + 0.5
    assert held_out[(2, "diag")] > held_out[(1, "full")] + 0.5
    assert by_choice[(8, "full")]["parameters"] > by_choice[(2, "diag")]["parameters"]
    # One cluster: one component.
    one = np.random.default_rng(3).standard_normal((800, 3))
    assert len(select_gaussian_mixture(one, component_choices=(1, 2, 8))[0].weights) == 1


def test_selection_refuses_too_few_codes_and_a_bad_share():
    with pytest.raises(ValueError, match="at least 10 codes"):
        select_gaussian_mixture(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="held_out_share"):
        select_gaussian_mixture(two_clusters(100), held_out_share=1.0)
    with pytest.raises(ValueError, match="covariance must be"):
        fit_gaussian_mixture(two_clusters(100), 2, "spherical")
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_gaussian_mixture(np.zeros((2, 2)), 3)


def stats_with_mixture(codes=None):
    codes = two_clusters(400) if codes is None else codes
    return with_mixture(latent.latent_statistics(codes, np.full_like(codes, -2.0)), codes)


def test_the_mixture_is_stored_with_the_statistics_and_old_files_load(tmp_path):
    stats = stats_with_mixture()
    assert stats.mixture_weights.shape == (2,) and stats.mixture_scale_tril.shape == (2, 3, 3)
    path = stats.save(tmp_path / "latent_stats.npz")
    loaded = LatentStats.load(path)
    for name in ("mixture_weights", "mixture_means", "mixture_scale_tril", "points"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    assert samplers.samplers_for(loaded) == ["near", "mixture", "data", "prior"]

    # A file written before the mixture existed: everything else loads, the sampler says so.
    old = dict(np.load(path))
    for name in ("mixture_weights", "mixture_means", "mixture_scale_tril"):
        del old[name]
    np.savez(tmp_path / "old.npz", **old)
    older = LatentStats.load(tmp_path / "old.npz")
    assert older.mixture_weights is None
    np.testing.assert_array_equal(older.point_log_vars, stats.point_log_vars)
    assert samplers.samplers_for(older) == ["near", "data", "prior"]
    with pytest.raises(ValueError, match=r"fit-sampler RUN DATA.*allows: near, data, prior"):
        samplers.draw_latents(4, 3, older, "mixture")
    with pytest.raises(ValueError, match="needs a Gaussian mixture"):
        samplers.sample_from_mixture(4, older)

    # A mixture that does not fit is dropped on loading, as if never recorded.
    np.savez(tmp_path / "bad.npz", **{**old, "mixture_weights": np.ones(2), "mixture_means":
             np.zeros((2, 5)), "mixture_scale_tril": np.ones((2, 5, 5))})  # fmt: skip
    assert LatentStats.load(tmp_path / "bad.npz").mixture_weights is None
    with pytest.raises(ValueError, match="not a mixture of 3-D Gaussians"):
        dataclasses.replace(stats, mixture_means=None)
    with pytest.raises(ValueError, match="not a mixture"):
        dataclasses.replace(stats, mixture_weights=np.array([0.2, 0.2]))


def test_the_mixture_sampler_draws_from_the_fitted_clusters():
    stats = stats_with_mixture(two_clusters(2000))
    z, used = samplers.draw_latents(4000, 3, stats, "mixture", seed=5)
    assert used == "mixture" and z.shape == (4000, 3) and z.dtype == np.float32
    near_first = np.linalg.norm(z - TRUE_MEANS[0], axis=1) < np.linalg.norm(
        z - TRUE_MEANS[1], axis=1
    )
    assert near_first.mean() == pytest.approx(0.3, abs=0.03)
    # Not one Gaussian over both: almost nothing lands halfway between the clusters.
    halfway = np.linalg.norm(z - TRUE_MEANS.mean(axis=0), axis=1) < 1.0
    assert halfway.mean() < 0.01
    again = samplers.sample_from_mixture(10, stats, seed=5)
    np.testing.assert_array_equal(again, z[:10])  # a larger n extends a smaller one
    at_zero = samplers.sample_from_mixture(6, stats, seed=1, temperature=0.0)
    assert {tuple(row) for row in np.round(at_zero, 4)} <= {
        tuple(row) for row in np.round(stats.mixture_means, 4)
    }
    with pytest.raises(ValueError, match="temperature"):
        samplers.sample_from_mixture(2, stats, temperature=3.0)


def test_too_few_codes_get_no_mixture():
    codes = np.random.default_rng(0).standard_normal((mixture.MIN_CODES - 1, 2))
    stats = latent.latent_statistics(codes)
    assert with_mixture(stats, codes) is stats
    assert with_mixture(None, codes) is None
