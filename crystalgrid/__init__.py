"""crystalgrid: crystal structures to machine-learning datasets of 3-D voxel grids.

The public API:

- :class:`GridSpec`: the box and voxel geometry (defaults of Hoffmann et al. 2019).
- :func:`make_samples`, :func:`density_grid`, :func:`species_grid`: grids of one crystal.
- :func:`build`, :class:`BuildConfig`: a Zarr dataset from a collection of structures.
- :func:`open_dataset`: load a built dataset by split.
- :func:`open_source`: structures from a collection, CIF folder, CSV, JSON or the demo set.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crystalgrid")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# ``build`` is both a module and the function it defines: importing the function here, after
# the module, makes ``crystalgrid.build`` the function (the module stays importable by name).
from crystalgrid.build import BuildConfig, build
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
