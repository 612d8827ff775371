"""crystalgrid: crystal structures to machine-learning datasets of 3-D voxel grids.

The public API:

- :class:`GridSpec`: the box and voxel geometry (defaults of Hoffmann et al. 2019).
- :func:`make_samples`, :func:`density_grid`, :func:`species_grid`: grids of one crystal.
- :func:`build`, :class:`BuildConfig`: a Zarr dataset from a collection of structures.
- :func:`open_dataset`: load a built dataset by split.
- :func:`open_source`: structures from a collection, CIF folder, CSV, JSON or the demo set.
- :class:`CrystalgridError` and its kinds :class:`ConfigError`, :class:`BadInputError`,
  :class:`IntegrityError` (also ``ValueError``), :class:`NotFoundError` (also
  ``FileNotFoundError``), :class:`LockedError` (also ``RuntimeError``) and
  :class:`RemoteStorageError`; :class:`RejectedStructure` for a structure that cannot be gridded.

The build's module is :mod:`crystalgrid.builder` (``crystalgrid.build`` is the function); the
models are in :mod:`crystalgrid.models`, the gridding backends in :mod:`crystalgrid.grids`.
"""

from __future__ import annotations

from crystalgrid._version import __version__
from crystalgrid.builder import BuildConfig, build
from crystalgrid.dataset import open_dataset
from crystalgrid.errors import (
    BadInputError,
    ConfigError,
    CrystalgridError,
    IntegrityError,
    LockedError,
    NotFoundError,
    RejectedStructure,
    RemoteStorageError,
)
from crystalgrid.grids import density_grid, species_grid
from crystalgrid.samples import make_samples
from crystalgrid.sources import open_source
from crystalgrid.spec import GridSpec

__all__ = [
    "BadInputError",
    "BuildConfig",
    "ConfigError",
    "CrystalgridError",
    "GridSpec",
    "IntegrityError",
    "LockedError",
    "NotFoundError",
    "RejectedStructure",
    "RemoteStorageError",
    "__version__",
    "build",
    "density_grid",
    "make_samples",
    "open_dataset",
    "open_source",
    "species_grid",
]
