"""The grid specification: the box, its voxels and the widths of the two fields.

Defaults are the reference paper's (Hoffmann et al. 2019): a 10 Å cube cut into 30 bins per
axis (0.333 Å voxels), Gaussians of sigma 1 Å for the density, and a 0.5 Å radius for the
species field. Voxel ``(i, j, k)`` has its centre at ``((i + 0.5) h, (j + 0.5) h, (k + 0.5) h)``
in box coordinates (Å), ``h = side / bins``; the box spans ``[0, side)^3``. Axis 0 of every grid
is x, axis 1 is y, axis 2 is z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crystalgrid.config_base import Config
from crystalgrid.errors import ConfigError

__all__ = ["GridSpec"]


@dataclass(frozen=True, kw_only=True)
class GridSpec(Config):
    """Geometry of the voxel grids.

    Attributes:
        side: edge of the cubic box, Å.
        bins: voxels per axis.
        sigma: standard deviation of each atom's Gaussian in the density, Å.
        species_radius: a voxel takes the atomic number of the nearest atom within this
            distance of its centre, Å.
        tolerance: largest error allowed in the density, as a fraction of the grid's
            maximum. Each atom's Gaussian is dropped where it is below ``tolerance / 10`` of
            its own peak (see :attr:`cutoff`), which keeps the error of real samples (atoms
            inside the box) well under ``tolerance`` of the maximum.
    """

    side: float = 10.0
    bins: int = 30
    sigma: float = 1.0
    species_radius: float = 0.5
    tolerance: float = 1e-4

    config_name = "grid spec"

    def __post_init__(self) -> None:
        if not (self.side > 0 and math.isfinite(self.side)):
            raise ConfigError(f"side must be a positive number of Å, got {self.side!r}")
        if not (isinstance(self.bins, int | np.integer) and 2 <= self.bins <= 1024):
            raise ConfigError(f"bins must be an integer in [2, 1024], got {self.bins!r}")
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ConfigError(f"sigma must be a positive number of Å, got {self.sigma!r}")
        if not (self.species_radius >= 0 and math.isfinite(self.species_radius)):
            raise ConfigError(f"species_radius must be >= 0 Å, got {self.species_radius!r}")
        if not (0 < self.tolerance < 1):
            raise ConfigError(f"tolerance must be in (0, 1), got {self.tolerance!r}")

    @property
    def voxel(self) -> float:
        """Edge of one voxel, Å."""
        return self.side / self.bins

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one grid: ``(bins, bins, bins)``."""
        return (self.bins, self.bins, self.bins)

    @property
    def norm(self) -> float:
        """The density's normalisation ``1 / (sigma^3 (2 pi)^(3/2))``, Å^-3."""
        return 1.0 / (self.sigma**3 * (2.0 * math.pi) ** 1.5)

    @property
    def cutoff(self) -> float:
        """Distance (Å) beyond which an atom's Gaussian is dropped.

        At this distance the Gaussian is ``tolerance / 10`` of its peak (4.8 sigma by
        default), so the tails dropped from the dozens of atoms around a voxel add up to a
        small fraction of the allowed error.
        """
        return self.sigma * math.sqrt(2.0 * math.log(10.0 / self.tolerance))

    def centres(self) -> np.ndarray:
        """Voxel-centre coordinates along one axis, shape ``(bins,)``, Å."""
        return (np.arange(self.bins, dtype=np.float64) + 0.5) * self.voxel
