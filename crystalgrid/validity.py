"""The structural validity bounds used everywhere (CDVAE, Xie et al. 2022).

A structure is valid when no two atoms (periodic images included, where it has a lattice)
are closer than :data:`MIN_DISTANCE` and its cell volume is above :data:`MIN_VOLUME`. The
build's filters reject source structures by the same bounds (the distance one is a setting
there), the generator and the structure matcher score decoded ones by them.
"""

from __future__ import annotations

__all__ = ["MIN_DISTANCE", "MIN_VOLUME"]

#: No two atoms closer than this, Å.
MIN_DISTANCE = 0.5
#: Cell volume above this, Å^3 (where the structure has a lattice).
MIN_VOLUME = 0.1
