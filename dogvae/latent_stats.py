"""What a run keeps about its training set's latent codes, and its file, latent_stats.npz.

The statistics feed the sliders (principal directions), two of the samplers ("new dogs"
and "variations of training dogs") and the 2-D scatter. ``latent.latent_statistics``
computes them from encoded training images; a run folder stores them as
``latent_stats.npz``: plain float32 arrays under the keys ``mean``, ``components``,
``variance``, ``points`` and, optionally, ``point_log_vars``. Reading never unpickles.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dogvae.atomic import write_atomically
from dogvae.checks import finite_float64

_REQUIRED = ("mean", "components", "variance", "points")  # the file's keys
_LOG_VARS = "point_log_vars"  # optional: runs saved before the "near" sampler lack it


@dataclass(frozen=True, eq=False)
class LatentStats:
    """The latent statistics of a run's training set; checked, float32 and read-only.

    Attributes:
        mean: ``(d,)`` mean of the training images' latent means.
        components: ``(k, d)`` principal directions of those means, largest variance first.
        variances: ``(k,)`` variance along each direction.
        points: ``(m, d)`` some of the latent means themselves (a random subset).
        point_log_vars: ``(m, d)`` the posterior log-variances of those points, or None
            (runs saved before they were recorded).

    Raises:
        ValueError: If the arrays are not real, finite numbers or their shapes do not
            fit together.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    points: np.ndarray
    point_log_vars: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "components", "variances", "points", "point_log_vars"):
            value = getattr(self, name)
            if value is not None:
                # The app shares one cached copy between sessions: nobody may change it.
                array = finite_float64(name, np.asarray(value)).astype(np.float32)
                array.setflags(write=False)
                object.__setattr__(self, name, array)
        mean, components, points = self.mean, self.components, self.points
        dim = mean.shape[0] if mean.ndim == 1 else 0
        log_vars = self.point_log_vars
        if (
            dim < 1
            or components.ndim != 2
            or len(components) < 1
            or components.shape[1] != dim
            or self.variances.shape != (len(components),)
            or points.ndim != 2
            or len(points) < 1
            or points.shape[1] != dim
            or (log_vars is not None and log_vars.shape != points.shape)
        ):
            shapes = ", ".join(
                f"{name} {getattr(self, name).shape}"
                for name in ("mean", "components", "variances", "points", "point_log_vars")
                if getattr(self, name) is not None
            )
            raise ValueError(f"latent statistics do not fit together: {shapes}")

    @property
    def latent_dim(self) -> int:
        return len(self.mean)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``latent_stats.npz`` at ``path`` atomically (and synced); returns the path."""
        arrays = {
            "mean": self.mean,
            "components": self.components,
            "variance": self.variances,
            "points": self.points,
        }
        if self.point_log_vars is not None:
            arrays[_LOG_VARS] = self.point_log_vars
        return write_atomically(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentStats:
        """Read a ``latent_stats.npz``, never unpickling.

        Log-variances that do not fit the points are dropped and the rest is kept, as
        for a run that never recorded them.

        Raises:
            FileNotFoundError: If there is no such file.
            ValueError: If the file is not such statistics or is damaged.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = [np.asarray(archive[key]) for key in _REQUIRED]
                log_vars = np.asarray(archive[_LOG_VARS]) if _LOG_VARS in archive.files else None
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is not a latent statistics file ({error})") from None
        if log_vars is not None:
            try:
                return cls(*arrays, point_log_vars=log_vars)
            except ValueError:
                pass
        return cls(*arrays)
