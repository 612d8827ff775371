"""crystalgrid: crystal structures to machine-learning datasets of 3-D voxel grids.

The public API:

- :class:`GridSpec`: the box and voxel geometry (defaults of Hoffmann et al. 2019).
- :func:`make_samples` / :func:`density_grid` / :func:`species_grid`: grids of one crystal.
- :func:`build`: a Zarr dataset from a collection of structures (Dask, resumable).
- :func:`open_dataset`: load a built dataset by split.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crystalgrid")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from crystalgrid.errors import CrystalgridError, RejectedStructure
from crystalgrid.spec import GridSpec

__all__ = ["CrystalgridError", "GridSpec", "RejectedStructure", "__version__"]
