"""The ways to draw latent points for new dogs, with the words the CLI and the pages use for them.

Three samplers, the most dog-like first: ``near`` draws from the posteriors of training
images, ``data`` from one Gaussian fitted to the training set's latent means, ``prior``
from N(0, I). The first two need the run's latent statistics (``LatentStats``);
:func:`draw_latents` picks the one asked for, or the best a run allows. NumPy only.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from dogvae.checks import check_int
from dogvae.latent_stats import LatentStats

# Samples this far out (in standard deviations) decode to noise; more is a typo.
MAX_TEMPERATURE = 2.0
AUTO = "auto"  # the best sampler the run's statistics allow


@dataclass(frozen=True)
class Sampler:
    """One way to draw latent points and how to describe it to a user."""

    name: str  # the CLI's --sampler value, and the key of the choice on the pages
    label: str  # what the images are, as the Generate page offers the choice
    source: str  # what the points are drawn from: "drawn from <source>"
    explanation: str  # how it draws and what that gives, for the help texts


SAMPLERS = {
    sampler.name: sampler
    for sampler in (
        Sampler(
            "near",
            "variations of training dogs",
            "the posteriors of training dogs",
            "each point is drawn from the posterior of one training photo (the aggregate "
            "posterior, what the decoder was trained on), so the images look most like dogs "
            "and stay close to real photos.",
        ),
        Sampler(
            "data",
            "new dogs like the training set",
            "the training dogs' latent distribution",
            "from one Gaussian with the mean and covariance of the training set's latent "
            "codes, which also lands between the dogs.",
        ),
        Sampler(
            "prior",
            "from the prior N(0, I)",
            "the prior N(0, I)",
            "what the VAE was trained towards (and what the original script sampled).",
        ),
    )
}
SAMPLER_CHOICES = (AUTO, *SAMPLERS)  # what --sampler accepts


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
    n = check_int("n", n, minimum=1)
    latent_dim = check_int("latent_dim", latent_dim, minimum=1)
    temperature = check_temperature(temperature)
    if seed is not None:
        seed = check_int("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((n, latent_dim))
    return (draws * temperature).astype(np.float32)


def sample_like_data(
    n: int, stats: LatentStats, seed: int | None = None, temperature: float = 1.0
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
        stats: The run's latent statistics (its latent_stats.npz).
        seed: As in :func:`sample_latents`; the same seed uses the same draws.
        temperature: Scales the spread around the mean, 0 to MAX_TEMPERATURE.

    Returns:
        ``(n, latent_dim)`` float32 array: ``mean + (temperature * e * sqrt(variances))
        @ components`` for standard normal draws ``e``.

    Raises:
        ValueError: If there are no statistics or an argument is out of range.
    """
    n = check_int("n", n, minimum=1)
    temperature = check_temperature(temperature)
    if not isinstance(stats, LatentStats):
        raise ValueError(
            "sampling like the data needs the run's latent statistics (mean, components, variance)"
        )
    mean = stats.mean.astype(np.float64)
    components = stats.components.astype(np.float64)
    variances = stats.variances.astype(np.float64)
    if seed is not None:
        seed = check_int("seed", seed, minimum=0)
    draws = np.random.default_rng(seed).standard_normal((n, len(components)))
    spread = temperature * np.sqrt(np.maximum(variances, 0.0))
    return (mean + (draws * spread) @ components).astype(np.float32)


def sample_near_data(
    n: int, stats: LatentStats, seed: int | None = None, temperature: float = 1.0
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
        stats: A run's latent statistics with ``point_log_vars``.
        seed: As in :func:`sample_latents`: the same seed makes the same draws.
        temperature: Scales each posterior's spread, 0 to MAX_TEMPERATURE; at 0
            every draw is a stored training code itself.

    Returns:
        ``(n, latent_dim)`` float32 array.

    Raises:
        ValueError: If the statistics lack the points' log-variances, or an
            argument is out of range.
    """
    n = check_int("n", n, minimum=1)
    temperature = check_temperature(temperature)
    if not isinstance(stats, LatentStats) or stats.point_log_vars is None:
        raise ValueError(
            "sampling near the training dogs needs the run's training codes and their "
            "log-variances, which runs saved before this sampler lack; `python -m dogvae stats "
            "RUN DATA` records them"
        )
    points = stats.points.astype(np.float64)
    log_vars = stats.point_log_vars.astype(np.float64)
    if seed is not None:
        seed = check_int("seed", seed, minimum=0)
    # Two streams, so that a larger n extends a smaller one with the same seed.
    choices, noise = np.random.default_rng(seed).spawn(2)
    chosen = choices.integers(0, len(points), n)
    draws = noise.standard_normal((n, points.shape[1]))
    spread = temperature * np.exp(0.5 * np.clip(log_vars[chosen], -30.0, 30.0))
    return (points[chosen] + draws * spread).astype(np.float32)


def samplers_for(stats: LatentStats | None) -> list[str]:
    """The samplers a run's latent statistics allow, the most dog-like first."""
    if stats is None:
        return ["prior"]
    return list(SAMPLERS) if stats.point_log_vars is not None else ["data", "prior"]


def draw_latents(
    n: int,
    latent_dim: int,
    stats: LatentStats | None,
    sampler: str = AUTO,
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
    if sampler not in SAMPLER_CHOICES:
        raise ValueError(f"sampler must be auto or one of {', '.join(SAMPLERS)}, got {sampler!r}")
    allowed = samplers_for(stats)
    chosen = allowed[0] if sampler == AUTO else sampler
    if chosen not in allowed:
        needs = "latent statistics" if stats is None else "training codes' log-variances"
        raise ValueError(
            f"the {chosen!r} sampler needs the run's {needs} (latent_stats.npz, which "
            f"`python -m dogvae stats RUN DATA` records); this run allows: {', '.join(allowed)}"
        )
    if stats is not None and stats.latent_dim != latent_dim:
        raise ValueError(
            f"the latent statistics are for {stats.latent_dim} latent dimensions, "
            f"the model has {latent_dim}"
        )
    if chosen == "near":
        return sample_near_data(n, stats, seed, temperature), chosen
    if chosen == "data":
        return sample_like_data(n, stats, seed, temperature), chosen
    return sample_latents(n, latent_dim, seed, temperature), chosen


def check_temperature(temperature: object) -> float:
    """``temperature`` as a float, or ValueError unless it is a number from 0 to MAX_TEMPERATURE."""
    if (
        not isinstance(temperature, numbers.Real)
        or isinstance(temperature, bool)
        or not 0.0 <= float(temperature) <= MAX_TEMPERATURE
    ):
        raise ValueError(f"temperature must be from 0 to {MAX_TEMPERATURE:g}, got {temperature!r}")
    return float(temperature)
