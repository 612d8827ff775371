"""crystalgrid: crystal structures to machine-learning datasets of 3-D voxel grids.

The public API (imported lazily, so ``import crystalgrid`` stays light):

- :class:`GridSpec`: the box and voxel geometry (defaults of Hoffmann et al. 2019).
- :func:`make_samples`, :func:`density_grid`, :func:`species_grid`: grids of one crystal.
- :func:`build`, :class:`BuildConfig`: a Zarr dataset from a collection of structures.
- :func:`open_dataset`: load a built dataset by split.
- :func:`open_source`: structures from a collection, CIF folder, CSV, JSON or the demo set.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("crystalgrid")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from crystalgrid.errors import CrystalgridError, RejectedStructure
from crystalgrid.spec import GridSpec

_LAZY = {
    "BuildConfig": "crystalgrid.build",
    "build": "crystalgrid.build",
    "open_dataset": "crystalgrid.dataset",
    "make_samples": "crystalgrid.samples",
    "density_grid": "crystalgrid.grids",
    "species_grid": "crystalgrid.grids",
    "open_source": "crystalgrid.sources",
}

__all__ = ["CrystalgridError", "GridSpec", "RejectedStructure", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crystalgrid' has no attribute {name!r}")
