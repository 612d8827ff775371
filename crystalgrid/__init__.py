"""crystalgrid: crystal structures to machine-learning datasets of 3-D voxel grids.

The public API:

- :class:`GridSpec`: the box and voxel geometry (defaults of Hoffmann et al. 2019).
- :func:`make_samples`, :func:`density_grid`, :func:`species_grid`: grids of one crystal.
- :func:`build`, :class:`BuildConfig`: a Zarr dataset from a collection of structures.
- :func:`open_dataset`: load a built dataset by split.
- :func:`open_source`: structures from a collection, CIF folder, CSV, JSON or the demo set.
"""

from __future__ import annotations

from crystalgrid._version import __version__

# ``build`` is both a module and the function it defines: importing the function here, after
# the module, makes ``crystalgrid.build`` the function (the module stays importable by name).
from crystalgrid.builder import BuildConfig, build
from crystalgrid.dataset import open_dataset
from crystalgrid.errors import CrystalgridError, RejectedStructure
from crystalgrid.grids import density_grid, species_grid
from crystalgrid.samples import make_samples
from crystalgrid.sources import open_source
from crystalgrid.spec import GridSpec

__all__ = [
    "BuildConfig",
    "CrystalgridError",
    "GridSpec",
    "RejectedStructure",
    "__version__",
    "build",
    "density_grid",
    "make_samples",
    "open_dataset",
    "open_source",
    "species_grid",
]
