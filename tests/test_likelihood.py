"""Bits per dimension: the pixel likelihoods and the ELBO / IWAE bounds against closed forms."""

import math

import numpy as np
import pytest

from dogvae import likelihood
from dogvae.likelihood import (
    bits_per_dim,
    continuous_bernoulli_log_prob,
    discretized_logistic_log_prob,
    gaussian_kl,
    likelihood_bounds,
)


def cb_bin_by_hand(k: int, lam: float) -> float:
    """P(bin k) from the continuous Bernoulli's CDF, F(x) = (l^x (1-l)^(1-x) + l - 1) / (2l - 1)."""

    def cdf(x):
        return (lam**x * (1 - lam) ** (1 - x) + lam - 1) / (2 * lam - 1)

    return cdf((k + 1) / 256) - cdf(k / 256)


def test_a_constant_decoder_on_a_two_pixel_image_matches_the_cdf_by_hand():
    pixels = np.array([[[[0]], [[200]]]], np.uint8)  # one 1x2 image
    lam = np.full((1, 1, 2, 1), 0.3)
    expected = math.log(cb_bin_by_hand(0, 0.3)) + math.log(cb_bin_by_hand(200, 0.3))
    assert continuous_bernoulli_log_prob(lam, pixels.reshape(1, 1, 2, 1))[0] == pytest.approx(
        expected, rel=1e-10
    )


def test_the_bins_of_a_continuous_bernoulli_sum_to_one_for_any_lambda():
    every_value = np.arange(256, dtype=np.uint8).reshape(1, 256, 1, 1)
    for lam in (1e-9, 1e-7, 0.01, 0.3, 0.5 - 1e-9, 0.5, 0.5 + 1e-7, 0.7, 0.999, 1.0):
        log_probs = [
            continuous_bernoulli_log_prob(np.full((1, 1, 1, 1), lam), every_value[:, k : k + 1])[0]
            for k in range(256)
        ]
        assert np.all(np.isfinite(log_probs))
        assert math.fsum(np.exp(log_probs)) == pytest.approx(1.0, abs=1e-9), lam


def test_near_one_half_the_bins_are_uniform_and_continuous():
    pixels = np.array([0, 77, 255], np.uint8).reshape(1, 3, 1, 1)
    at_half = continuous_bernoulli_log_prob(np.full((1, 3, 1, 1), 0.5), pixels)[0]
    assert at_half == pytest.approx(3 * math.log(1 / 256), rel=1e-12)
    for lam in (0.5 + 1e-6, 0.5 - 1e-6, 0.5 + 1e-4):
        near = continuous_bernoulli_log_prob(np.full((1, 3, 1, 1), lam), pixels)[0]
        assert near == pytest.approx(sum(math.log(cb_bin_by_hand(k, lam)) for k in (0, 77, 255)))


def test_a_uniform_decoder_scores_exactly_eight_bits_per_dim():
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 1), dtype=np.uint8)
    figures = likelihood_bounds(
        lambda x: (np.zeros((len(x), 2)), np.zeros((len(x), 2))),  # posterior = prior
        lambda z: np.full((len(z), 4, 4, 1), 0.5, np.float32),
        images,
        samples=5,
    )
    assert figures["reconstruction_bpd"] == pytest.approx(8.0, abs=1e-12)
    assert figures["kl_bpd"] == 0.0
    assert figures["elbo_bpd"] == pytest.approx(8.0, abs=1e-12)  # q = p: log w = log p(x|z)
    assert figures["iwae_bpd"] == pytest.approx(8.0, abs=1e-12)


def test_the_kl_part_is_the_closed_form_gaussian_kl():
    mean, log_var = np.array([[1.0, -2.0]]), np.array([[0.5, -1.0]])
    by_hand = 0.5 * ((math.exp(0.5) + 1 - 1 - 0.5) + (math.exp(-1) + 4 - 1 + 1))
    assert gaussian_kl(mean, log_var)[0] == pytest.approx(by_hand)
    figures = likelihood_bounds(
        lambda x: (np.broadcast_to(mean, (len(x), 2)), np.broadcast_to(log_var, (len(x), 2))),
        lambda z: np.full((len(z), 1, 2, 1), 0.5),
        np.zeros((4, 1, 2, 1), np.uint8),
        samples=4000,
    )
    assert figures["kl_bpd"] == pytest.approx(bits_per_dim(by_hand, 2))
    # The sampled KL inside the ELBO agrees with the closed form up to Monte Carlo noise.
    sampled_kl = figures["elbo_bpd"] - figures["reconstruction_bpd"]
    assert sampled_kl == pytest.approx(figures["kl_bpd"], rel=0.05)


def latent_model(seed=0):
    """A small linear-sigmoid decoder and an encoder that is not its exact posterior."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((3, 12))

    def encode(x):
        flat = x.reshape(len(x), -1).astype(np.float64) / 255
        return flat[:, :3] - 0.5, np.full((len(x), 3), -1.0)

    def decode(z):
        return (1 / (1 + np.exp(-(z @ weights)))).reshape(len(z), 3, 4, 1)

    images = rng.integers(0, 256, (6, 3, 4, 1), dtype=np.uint8)
    return encode, decode, images


def test_iwae_is_below_the_elbo_and_equals_it_for_one_sample():
    encode, decode, images = latent_model()
    one = likelihood_bounds(encode, decode, images, samples=1, seed=3)
    assert one["iwae_bpd"] == pytest.approx(one["elbo_bpd"], abs=1e-12)
    many = likelihood_bounds(encode, decode, images, samples=64, seed=3)
    assert many["iwae_bpd"] < many["elbo_bpd"] - 1e-3
    again = likelihood_bounds(encode, decode, images, samples=64, seed=3)
    assert again == many  # the seed fixes the draws
    # Batching the images differently draws the same points in a different order only.
    assert likelihood_bounds(encode, decode, images, samples=64, seed=3, batch_size=6)[
        "iwae_bpd"
    ] == pytest.approx(many["iwae_bpd"], abs=0.05)


def test_discretized_logistic_bins_sum_to_one_and_match_the_sigmoid_by_hand():
    every_value = np.arange(256, dtype=np.uint8).reshape(256, 1, 1, 1)
    mean = np.full((256, 1, 1, 1), 0.4)
    for log_scale in (-8.0, -3.0, 0.0):
        log_probs = discretized_logistic_log_prob((mean, log_scale), every_value)
        assert math.fsum(np.exp(log_probs)) == pytest.approx(1.0, abs=1e-9)
    s = math.exp(-3.0)

    def sigmoid(t):
        return 1 / (1 + math.exp(-t))

    k = 100
    by_hand = sigmoid(((k + 0.5) / 255 - 0.4) / s) - sigmoid(((k - 0.5) / 255 - 0.4) / s)
    got = discretized_logistic_log_prob((mean[:1], -3.0), every_value[k : k + 1])[0]
    assert got == pytest.approx(math.log(by_hand), rel=1e-10)
    assert likelihood.LIKELIHOODS["discretized_logistic"] is discretized_logistic_log_prob


def test_bad_input_is_refused_with_a_message():
    encode, decode, images = latent_model()
    with pytest.raises(ValueError, match="samples must be between 1 and"):
        likelihood_bounds(encode, decode, images, samples=0)
    with pytest.raises(ValueError, match="uint8"):
        likelihood_bounds(encode, decode, images.astype(np.float32))
    with pytest.raises(ValueError, match="n >= 1"):
        likelihood_bounds(encode, decode, images[:0])
    with pytest.raises(ValueError, match="decoder's shape"):
        continuous_bernoulli_log_prob(np.full((1, 2, 2, 1), 0.5), images[:1])
