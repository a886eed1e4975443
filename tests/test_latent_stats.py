"""Tests for dogvae.latent_stats: the statistics check themselves, cannot be changed, and
round-trip through latent_stats.npz in its unchanged format."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dogvae.latent import latent_statistics
from dogvae.latent_stats import LatentStats

DEFAULT_STATS = Path(__file__).resolve().parents[1] / "models" / "default" / "latent_stats.npz"


def made_up(with_log_vars: bool = True) -> LatentStats:
    rng = np.random.default_rng(0)
    means = rng.normal(size=(40, 3))
    return latent_statistics(means, rng.uniform(-3, 0, means.shape) if with_log_vars else None)


def test_statistics_are_float32_and_read_only():
    means = np.random.default_rng(1).normal(size=(10, 2))  # float64
    stats = LatentStats(
        mean=means.mean(axis=0),
        components=np.eye(2),
        variances=np.ones(2),
        points=means,
    )
    assert stats.latent_dim == 2 and stats.point_log_vars is None
    for array in (stats.mean, stats.components, stats.variances, stats.points):
        assert array.dtype == np.float32
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1.0
    means[0, 0] = 99.0  # the caller's array is copied, not frozen
    assert stats.points[0, 0] != 99.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mean": np.zeros(2)}, "do not fit"),
        ({"components": np.zeros((3, 2))}, "do not fit"),
        ({"variances": np.zeros(2)}, "do not fit"),
        ({"points": np.zeros((5, 4))}, "do not fit"),
        ({"points": np.zeros((0, 3))}, "do not fit"),
        ({"point_log_vars": np.zeros((5, 3))}, "do not fit"),
        ({"mean": np.array([0.0, np.nan, 0.0])}, "NaN"),
        ({"points": np.full((4, 3), np.inf)}, "NaN or infinity"),
        ({"mean": np.array(["a", "b", "c"])}, "real numbers"),
    ],
)
def test_statistics_that_do_not_fit_together_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        replace(made_up(), **change)


@pytest.mark.parametrize("with_log_vars", [True, False])
def test_the_file_round_trips_in_its_format(tmp_path, with_log_vars):
    stats = made_up(with_log_vars)
    path = stats.save(tmp_path / "latent_stats.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latent_stats.npz"]  # no temp file
    with np.load(path, allow_pickle=False) as archive:  # the keys runs have always had
        expected = ["components", "mean", "points", "variance"]
        assert sorted(archive.files) == sorted(expected + ["point_log_vars"] * with_log_vars)
        np.testing.assert_array_equal(archive["variance"], stats.variances)
        assert all(archive[key].dtype == np.float32 for key in archive.files)
    loaded = LatentStats.load(path)
    for name in ("mean", "components", "variances", "points"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    if with_log_vars:
        np.testing.assert_array_equal(loaded.point_log_vars, stats.point_log_vars)
    else:
        assert loaded.point_log_vars is None


def test_loading_refuses_missing_damaged_or_pickled_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        LatentStats.load(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a latent statistics file"):
        LatentStats.load(tmp_path / "bad.npz")
    evil = np.array([{"x": 1}], dtype=object)
    with (tmp_path / "evil.npz").open("wb") as handle:
        np.savez(handle, mean=evil, components=evil, variance=evil, points=evil)
    with pytest.raises(ValueError, match="not a latent statistics file"):
        LatentStats.load(tmp_path / "evil.npz")
    with (tmp_path / "short.npz").open("wb") as handle:
        np.savez(handle, mean=np.zeros(2))
    with pytest.raises(ValueError, match="not a latent statistics file"):
        LatentStats.load(tmp_path / "short.npz")


def test_the_default_models_file_still_loads(tmp_path):
    stats = LatentStats.load(DEFAULT_STATS)
    assert stats.latent_dim == 64
    assert stats.components.shape == (64, 64) and stats.variances.shape == (64,)
    assert stats.points.shape == stats.point_log_vars.shape == (2_000, 64)
    with np.load(DEFAULT_STATS, allow_pickle=False) as archive:
        np.testing.assert_array_equal(stats.variances, archive["variance"])
        np.testing.assert_array_equal(stats.point_log_vars, archive["point_log_vars"])
    # Written again, the file has the same arrays under the same keys.
    again = stats.save(tmp_path / "latent_stats.npz")
    with np.load(DEFAULT_STATS) as before, np.load(again) as after:
        assert sorted(before.files) == sorted(after.files)
        for key in before.files:
            np.testing.assert_array_equal(before[key], after[key])
