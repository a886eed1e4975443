"""A Gaussian mixture fitted to a run's training codes, the "mixture" sampler's model (NumPy only).

One Gaussian over the codes (the "data" sampler) lands between the dogs wherever the
codes form clusters; a mixture follows them. :func:`fit_gaussian_mixture` runs EM for
a given number of components with diagonal or full covariances;
:func:`select_gaussian_mixture` picks both by the log-likelihood of held-out codes
(an ex-post density estimate as in Ghosh et al. 2020 and pythae's GMM sampler).
:func:`with_mixture` adds the chosen mixture to a run's ``LatentStats``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from dogvae.checks import check_int, finite_float64
from dogvae.latent_stats import MIXTURE_FIELDS, LatentStats

COVARIANCES = ("diag", "full")
COMPONENT_CHOICES = (1, 2, 4, 8, 16)  # tried by select_gaussian_mixture
HELD_OUT_SHARE = 0.2  # of the codes, scored and never fitted
MIN_CODES = 10  # fewer training codes than this get no mixture
MAX_ITERATIONS = 100
TOLERANCE = 1e-3  # EM stops once the mean log-likelihood per code gains less than this
MAX_FIT_CODES = 4000  # a random subset of more codes is fitted
# Added to every variance, relative to the codes' mean variance: keeps a component
# fitted to a handful of codes from collapsing onto them.
REGULARISATION = 1e-4


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """Weights ``(k,)``, means ``(k, d)`` and the covariances' Cholesky factors ``(k, d, d)``."""

    weights: np.ndarray
    means: np.ndarray
    scale_tril: np.ndarray

    @property
    def covariance(self) -> str:
        """ "diag" if every factor is diagonal, else "full"."""
        off_diagonal = self.scale_tril - np.einsum("kii->ki", self.scale_tril)[..., None] * np.eye(
            self.scale_tril.shape[1]
        )
        return "diag" if not np.any(off_diagonal) else "full"

    def log_likelihood(self, points: np.ndarray) -> np.ndarray:
        """``log p(point)`` under the mixture for each row of ``points`` ``(n, d)``, float64."""
        return _logsumexp(self._log_joint(np.asarray(points, np.float64)), axis=1)

    def _log_joint(self, points: np.ndarray) -> np.ndarray:
        """``log w_j + log N(x_i; mu_j, Sigma_j)``, shape ``(n, k)``."""
        dim = points.shape[1]
        log_weights = np.log(np.maximum(self.weights.astype(np.float64), 1e-300))
        if self.covariance == "diag":
            # All components in three matrix products instead of one pass each.
            precisions = 1.0 / np.einsum("kii->ki", self.scale_tril).astype(np.float64) ** 2
            means = self.means.astype(np.float64)
            squared = (
                (points**2) @ precisions.T
                - 2.0 * points @ (means * precisions).T
                + np.sum(means**2 * precisions, axis=1)
            )
            log_det = -np.sum(np.log(precisions), axis=1)
            return log_weights - 0.5 * (dim * math.log(2 * math.pi) + log_det + squared)
        columns = []
        for weight, mean, tril in zip(self.weights, self.means, self.scale_tril, strict=True):
            whitened = (points - mean) @ np.linalg.inv(tril).T
            log_det = 2.0 * np.sum(np.log(np.diag(tril)))
            columns.append(
                math.log(max(float(weight), 1e-300))
                - 0.5 * (dim * math.log(2 * math.pi) + log_det + np.sum(whitened**2, axis=1))
            )
        return np.stack(columns, axis=1)

    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0) -> np.ndarray:
        """``n`` points ``(n, d)`` float32: a component by weight, then its Gaussian with the
        spread scaled by ``temperature``; the same seed extends a smaller ``n``."""
        choices, noise = np.random.default_rng(seed).spawn(2)
        weights = self.weights.astype(np.float64)
        chosen = choices.choice(len(weights), size=n, p=weights / weights.sum())
        draws = noise.standard_normal((n, self.means.shape[1]))
        spread = np.einsum("nij,nj->ni", self.scale_tril[chosen].astype(np.float64), draws)
        return (self.means[chosen] + temperature * spread).astype(np.float32)


def fit_gaussian_mixture(
    points: np.ndarray,
    components: int,
    covariance: str = "full",
    seed: int = 0,
    max_iterations: int = MAX_ITERATIONS,
) -> GaussianMixture:
    """Fit a Gaussian mixture to ``points`` by expectation-maximisation.

    The means start at ``components`` points chosen as in k-means++ (far apart), the
    covariances at the points' own; EM then runs until the mean log-likelihood gains
    less than TOLERANCE per point or ``max_iterations`` is reached.

    Args:
        points: ``(n, d)`` real, finite codes with ``n >= components``.
        components: Number of Gaussians, at least 1.
        covariance: "diag" or "full".
        seed: Seed of the starting means.
        max_iterations: EM steps at most.

    Returns:
        The fitted mixture.

    Raises:
        ValueError: For fewer points than components, an unknown covariance or
            non-finite points.
    """
    points = finite_float64("points", np.asarray(points))
    components = check_int("components", components, minimum=1)
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {', '.join(COVARIANCES)}, got {covariance!r}")
    if points.ndim != 2 or len(points) < components:
        raise ValueError(
            f"need at least {components} points (n, d) for {components} components, "
            f"got shape {points.shape}"
        )
    n = len(points)
    floor = REGULARISATION * max(float(points.var(axis=0).mean()), 1e-12)
    rng = np.random.default_rng(seed)
    if len(points) > MAX_FIT_CODES:  # more codes sharpen the fit little and cost much
        points = points[np.sort(rng.permutation(len(points))[:MAX_FIT_CODES])]
        n = len(points)
    means = _spread_out_points(points, components, rng)
    overall = _covariance(points, np.full(n, 1.0 / n), points.mean(axis=0), covariance, floor)
    mixture = GaussianMixture(
        np.full(components, 1.0 / components), means, np.repeat(overall[None], components, 0)
    )
    previous = -np.inf
    for _ in range(max_iterations):
        log_joint = mixture._log_joint(points)
        log_norm = _logsumexp(log_joint, axis=1)
        score = float(log_norm.mean())
        responsibilities = np.exp(log_joint - log_norm[:, None])
        mixture = _maximise(points, responsibilities, covariance, floor)
        if score - previous < TOLERANCE:
            break
        previous = score
    return mixture


def select_gaussian_mixture(
    points: np.ndarray,
    component_choices: tuple[int, ...] = COMPONENT_CHOICES,
    covariances: tuple[str, ...] = COVARIANCES,
    held_out_share: float = HELD_OUT_SHARE,
    seed: int = 0,
) -> tuple[GaussianMixture, list[dict]]:
    """The mixture whose held-out codes score best, refitted to all of them.

    Every choice of components and covariance is fitted to a random ``1 - held_out_share``
    of the points and scored by the mean log-likelihood of the rest. Of the choices
    within one standard error of the best score, the one with the fewest parameters
    wins (more components fit noise as well as clusters); it is then fitted to all points.

    Args:
        points: ``(n, d)`` codes, at least MIN_CODES.
        component_choices: Numbers of components to try (those above the fitted share's
            size are skipped).
        covariances: "diag" and/or "full".
        held_out_share: Share of the points scored, in (0, 1).
        seed: Seed of the split and of the fits.

    Returns:
        ``(mixture, scores)``, with one ``{"components", "covariance", "parameters",
        "held_out_log_likelihood"}`` per choice tried.

    Raises:
        ValueError: For fewer than MIN_CODES points or a share out of range.
    """
    points = finite_float64("points", np.asarray(points))
    if points.ndim != 2 or len(points) < MIN_CODES:
        raise ValueError(f"need at least {MIN_CODES} codes (n, d), got shape {points.shape}")
    if not 0.0 < held_out_share < 1.0:
        raise ValueError(f"held_out_share must be in (0, 1), got {held_out_share!r}")
    order = np.random.default_rng(seed).permutation(len(points))
    held = max(1, round(held_out_share * len(points)))
    fitted, scored = points[order[held:]], points[order[:held]]
    dim = points.shape[1]
    scores, spreads = [], []
    for covariance in covariances:
        for components in component_choices:
            if components > len(fitted):
                continue
            mixture = fit_gaussian_mixture(fitted, components, covariance, seed)
            held_out = mixture.log_likelihood(scored)
            per_component = 2 * dim if covariance == "diag" else dim + dim * (dim + 1) // 2
            scores.append(
                {
                    "components": components,
                    "covariance": covariance,
                    "parameters": components * (per_component + 1) - 1,
                    "held_out_log_likelihood": float(held_out.mean()),
                }
            )
            spreads.append(float(held_out.std()) / math.sqrt(len(held_out)))
    best = int(np.argmax([row["held_out_log_likelihood"] for row in scores]))
    good_enough = scores[best]["held_out_log_likelihood"] - spreads[best]
    simplest = min(
        (row for row in scores if row["held_out_log_likelihood"] >= good_enough),
        key=lambda row: row["parameters"],
    )
    mixture = fit_gaussian_mixture(points, simplest["components"], simplest["covariance"], seed)
    return mixture, scores


def with_mixture(stats: LatentStats | None, codes: np.ndarray) -> LatentStats | None:
    """``stats`` with a mixture selected on ``codes`` (the training set's z_means) added;
    unchanged for fewer than MIN_CODES codes or no statistics."""
    if stats is None or len(codes) < MIN_CODES:
        return stats
    mixture, _ = select_gaussian_mixture(codes)
    arrays = (mixture.weights, mixture.means, mixture.scale_tril)
    return dataclasses.replace(stats, **dict(zip(MIXTURE_FIELDS, arrays, strict=True)))


def mixture_of(stats: LatentStats) -> GaussianMixture | None:
    """The mixture stored in a run's latent statistics, or None (runs saved without one)."""
    if stats.mixture_weights is None:
        return None
    return GaussianMixture(stats.mixture_weights, stats.mixture_means, stats.mixture_scale_tril)


def _spread_out_points(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` of the points, each next one drawn by squared distance to those chosen."""
    chosen = [points[rng.integers(len(points))]]
    nearest = np.sum((points - chosen[0]) ** 2, axis=1)
    for _ in range(count - 1):
        total = nearest.sum()
        index = (
            rng.choice(len(points), p=nearest / total) if total > 0 else rng.integers(len(points))
        )
        chosen.append(points[index])
        nearest = np.minimum(nearest, np.sum((points - points[index]) ** 2, axis=1))
    return np.array(chosen)


def _maximise(
    points: np.ndarray, responsibilities: np.ndarray, covariance: str, floor: float
) -> GaussianMixture:
    """The M step: weights, means and covariances from the responsibilities ``(n, k)``."""
    totals = responsibilities.sum(axis=0) + 1e-12
    means = (responsibilities.T @ points) / totals[:, None]
    if covariance == "diag":
        variances = (responsibilities.T @ points**2) / totals[:, None] - means**2
        scales = np.sqrt(np.maximum(variances, 0.0) + floor)
        trils = scales[:, :, None] * np.eye(points.shape[1])
        return GaussianMixture(totals / totals.sum(), means, trils)
    trils = [
        _covariance(points, responsibilities[:, j] / totals[j], means[j], covariance, floor)
        for j in range(len(totals))
    ]
    return GaussianMixture(totals / totals.sum(), means, np.stack(trils))


def _covariance(
    points: np.ndarray, weights: np.ndarray, mean: np.ndarray, covariance: str, floor: float
) -> np.ndarray:
    """The Cholesky factor of the weighted covariance of ``points`` around ``mean``."""
    centred = points - mean
    if covariance == "diag":
        return np.diag(np.sqrt(weights @ centred**2 + floor))
    matrix = (centred * weights[:, None]).T @ centred
    return np.linalg.cholesky(matrix + floor * np.eye(len(mean)))


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(values - top).sum(axis=axis, keepdims=True))).squeeze(axis)
