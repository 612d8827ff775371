"""Checks that decide whether a parsed structure can be gridded.

:func:`check_structure` raises :class:`~crystalgrid.errors.RejectedStructure` with a short,
stable ``reason`` (counted in a dataset's reject log) and a human ``detail``. The reasons, in
the order they are checked (cheapest first):

- ``"empty"``: no sites.
- ``"zero_volume"``: a non-finite lattice, or a cell volume <= 0.1 Å^3 (the CDVAE validity
  bound).
- ``"max_side"``: a lattice length (a, b or c) >= ``max_side`` Å (the reference paper keeps
  cells whose longest side is < 10 Å).
- ``"too_many_atoms"``: more than ``max_atoms`` sites (only when a limit is given).
- ``"unknown_element"``: a dummy species (pymatgen's ``DummySpecies``, e.g. ``X0+``) or an
  atomic number outside 1..118.
- ``"disordered"``: partial occupancy, mixed sites, or an occupancy above 1.
- ``"too_close"``: two atoms (periodic images included, so also an atom and its own image)
  closer than ``min_distance`` Å (the CDVAE validity bound is 0.5 Å).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from crystalgrid.config_base import Config
from crystalgrid.errors import ConfigError, RejectedStructure
from crystalgrid.validity import MIN_DISTANCE, MIN_VOLUME

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pymatgen.core import Lattice, Structure

__all__ = ["MIN_VOLUME", "REASONS", "FilterConfig", "check_structure", "describe_rejects"]


#: Every reason :func:`check_structure` can give, in the order it checks them.
REASONS = (
    "empty",
    "zero_volume",
    "max_side",
    "too_many_atoms",
    "unknown_element",
    "disordered",
    "too_close",
)

_MAX_Z = 118


@dataclass(frozen=True, kw_only=True)
class FilterConfig(Config):
    """The limits :func:`check_structure` applies (stored with every dataset).

    Attributes:
        max_side: reject cells with any lattice length >= this, Å.
        min_distance: reject cells with two atoms (periodic images included) closer than
            this, Å.
        max_atoms: reject cells with more sites than this; ``None`` for no limit.
    """

    max_side: float = 10.0
    min_distance: float = MIN_DISTANCE
    max_atoms: int | None = None

    config_name = "filter configuration"

    def __post_init__(self) -> None:
        if not (self.max_side > 0 and math.isfinite(self.max_side)):
            raise ConfigError(f"max_side must be a positive number of Å, got {self.max_side!r}")
        if not (self.min_distance >= 0 and math.isfinite(self.min_distance)):
            raise ConfigError(f"min_distance must be >= 0 Å, got {self.min_distance!r}")
        if self.max_atoms is not None and not (
            isinstance(self.max_atoms, int | np.integer) and self.max_atoms >= 1
        ):
            raise ConfigError(
                f"max_atoms must be a positive integer or None, got {self.max_atoms!r}"
            )

    def check(self, structure: Structure) -> None:
        """Apply :func:`check_structure` with these limits."""
        check_structure(
            structure,
            max_side=self.max_side,
            min_distance=self.min_distance,
            max_atoms=self.max_atoms,
        )


def check_structure(
    structure: Structure,
    *,
    max_side: float = 10.0,
    min_distance: float = 0.5,
    max_atoms: int | None = None,
) -> None:
    """Raise if ``structure`` cannot be gridded; return ``None`` if it can.

    Args:
        structure: a pymatgen ``Structure`` (periodic in all three directions).
        max_side: largest lattice length allowed (exclusive), Å.
        min_distance: smallest interatomic distance allowed, Å, periodic images included.
        max_atoms: largest number of sites allowed; ``None`` for no limit.

    Raises:
        RejectedStructure: with one of :data:`REASONS` as ``reason``.
    """
    n_sites = len(structure)
    if n_sites == 0:
        raise RejectedStructure("empty", "the structure has no sites")

    lattice = structure.lattice
    matrix = np.asarray(lattice.matrix, dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise RejectedStructure("zero_volume", "the lattice matrix holds non-finite numbers")
    volume = abs(float(np.linalg.det(matrix)))
    if not volume > MIN_VOLUME:
        raise RejectedStructure(
            "zero_volume", f"cell volume {volume:.3g} Å^3 is not above {MIN_VOLUME} Å^3"
        )

    lengths = np.linalg.norm(matrix, axis=1)
    if lengths.max() >= max_side:
        abc = ", ".join(f"{x:.3f}" for x in lengths)
        raise RejectedStructure(
            "max_side", f"lattice lengths ({abc}) Å: the longest is >= {max_side:g} Å"
        )

    if max_atoms is not None and n_sites > max_atoms:
        raise RejectedStructure("too_many_atoms", f"{n_sites} sites, more than {max_atoms}")

    _check_species(structure)
    _check_distances(structure, lattice, min_distance)


def _check_species(structure: Structure) -> None:
    """Raise ``unknown_element`` or ``disordered`` (one pass over the sites)."""
    from pymatgen.core.periodic_table import DummySpecies

    for index, site in enumerate(structure):
        species = site.species
        for sp in species:
            z = getattr(sp, "Z", None)
            if isinstance(sp, DummySpecies) or not isinstance(z, int) or not 1 <= z <= _MAX_Z:
                raise RejectedStructure(
                    "unknown_element", f"site {index} holds {sp}, which is not a real element"
                )
        if len(species) != 1:
            raise RejectedStructure("disordered", f"site {index} mixes species ({species.formula})")
        occupancy = float(species.num_atoms)
        if occupancy != 1.0:
            kind = "partial occupancy" if occupancy < 1.0 else "occupancy above 1"
            raise RejectedStructure(
                "disordered", f"site {index} ({species.formula}) has {kind} {occupancy:.4g}"
            )


def _shortest_lattice_vector(lattice: Lattice) -> float:
    """Length of the shortest non-zero lattice vector, Å (an atom to its own image)."""
    reduced = np.asarray(lattice.get_lll_reduced_lattice().matrix, dtype=np.float64)
    # In 3-D, combinations of an LLL-reduced basis with coefficients in {-1, 0, 1} contain
    # the shortest vector.
    coeffs = np.array([c for c in itertools.product((-1, 0, 1), repeat=3) if any(c)])
    return float(np.linalg.norm(coeffs @ reduced, axis=1).min())


def _check_distances(structure: Structure, lattice: Lattice, min_distance: float) -> None:
    """Raise ``too_close`` if two atoms or an atom and an image lie < ``min_distance`` Å apart."""
    if min_distance <= 0:
        return
    self_image = _shortest_lattice_vector(lattice)
    if self_image < min_distance:
        raise RejectedStructure(
            "too_close",
            f"an atom is {self_image:.3f} Å from its own periodic image "
            f"(minimum {min_distance:g} Å)",
        )
    if len(structure) < 2:
        return
    # Minimum-image distances of all pairs, shape (N, N), Å: vectorised over pairs and images.
    frac = structure.frac_coords
    distances = lattice.get_all_distances(frac, frac)
    np.fill_diagonal(distances, np.inf)
    flat = int(np.argmin(distances))
    i, j = divmod(flat, distances.shape[1])
    closest = float(distances[i, j])
    if closest < min_distance:
        raise RejectedStructure(
            "too_close",
            f"sites {min(i, j)} ({structure[min(i, j)].species_string}) and {max(i, j)} "
            f"({structure[max(i, j)].species_string}) are {closest:.3f} Å apart "
            f"(minimum {min_distance:g} Å)",
        )


def describe_rejects(reasons: Iterable[str]) -> dict[str, int]:
    """Count rejects by reason.

    Args:
        reasons: one reason per rejected structure (e.g. ``RejectedStructure.reason``).

    Returns:
        ``{reason: count}`` with the reasons in sorted order.
    """
    counts = Counter(reasons)
    return {reason: counts[reason] for reason in sorted(counts)}
