"""Gridding: atoms placed in the 10 Å box, and their density and species grids, in two backends.

- :mod:`~crystalgrid.grids.placement` (numpy): where a crystal's atoms land in the box for each
  sample (:class:`Crystal`, :func:`placements`, seeded per crystal), as the builder does it.
- :mod:`~crystalgrid.grids.numpy_backend`: :func:`density_grid`, :func:`species_grid` of one
  sample (the builder's; CPU).
- :mod:`~crystalgrid.grids.torch_backend`: the same placement and grids batched in torch on
  any device (:func:`place_batch`, :func:`density_grids`, :func:`species_grids`,
  :func:`random_transforms`); agrees with the numpy backend within
  :data:`~crystalgrid.grids.common.BACKEND_AGREEMENT` of the maximum (species exactly).
- :mod:`~crystalgrid.grids.sampler`: :class:`GridSampler`, fresh samples of a store's
  crystals every training step, on the GPU.
- :mod:`~crystalgrid.grids.common`: what both share (representations, the exponent floor,
  the rotation formula, the agreement bound).

Importing this package needs numpy only; the torch modules import torch.
"""

from __future__ import annotations

from crystalgrid.grids.common import BACKEND_AGREEMENT, REPRESENTATIONS, Representation
from crystalgrid.grids.numpy_backend import (
    axis_factors,
    density_grid,
    density_grid_reference,
    species_grid,
)
from crystalgrid.grids.placement import Crystal, Placement, placements

__all__ = [
    "BACKEND_AGREEMENT",
    "REPRESENTATIONS",
    "Crystal",
    "Placement",
    "Representation",
    "axis_factors",
    "density_grid",
    "density_grid_reference",
    "placements",
    "species_grid",
]
