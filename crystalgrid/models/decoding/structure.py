"""Decoded atoms as pymatgen objects and CIF files.

The atoms of a grid are in the box frame (Cartesian Å in the grid's cube): the box is a frame,
not a period of the crystal, so :func:`atoms_to_structure` gives it as a cubic lattice only to
write a CIF or to look at the atoms. This module does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crystalgrid.errors import BadInputError
from crystalgrid.spec import GridSpec

if TYPE_CHECKING:
    from pymatgen.core import Molecule, Structure

__all__ = ["atoms_to_molecule", "atoms_to_structure", "write_cif"]


def atoms_to_molecule(positions: np.ndarray, numbers: np.ndarray) -> Molecule:
    """A pymatgen ``Molecule`` of the atoms (Cartesian Å, box frame; no lattice, no periodicity)."""
    from pymatgen.core import Molecule

    species: list[Any] = [int(z) for z in numbers]  # pymatgen takes Z, its hints do not say so
    return Molecule(species, np.asarray(positions, dtype=float).reshape(-1, 3))


def atoms_to_structure(positions: np.ndarray, numbers: np.ndarray, spec: GridSpec) -> Structure:
    """A pymatgen ``Structure`` whose lattice is the cubic box of ``spec`` (side ``spec.side`` Å).

    The box is a frame for the atoms, not a period of the crystal: a crop is not a unit cell,
    so the periodic images this Structure implies are not the real neighbours. Use it to write
    a CIF or to look at the atoms; to compare with the real crystal, map the atoms back with
    the sample's transform and the true lattice.

    Args:
        positions: ``(n, 3)`` Cartesian Å in the box frame.
        numbers: ``(n,)`` atomic numbers.
        spec: the grid geometry.

    Returns:
        The Structure (Cartesian coordinates kept as given, also outside ``[0, side)``).
    """
    from pymatgen.core import Lattice, Structure

    species: list[Any] = [int(z) for z in numbers]  # pymatgen takes Z, its hints do not say so
    return Structure(
        Lattice.cubic(spec.side),
        species,
        np.asarray(positions, dtype=float).reshape(-1, 3),
        coords_are_cartesian=True,
    )


def write_cif(
    path: str | Path, positions: np.ndarray, numbers: np.ndarray, *, spec: GridSpec
) -> Path:
    """Write the atoms as a CIF in the cubic box of ``spec`` (see :func:`atoms_to_structure`).

    Raises:
        BadInputError: if there are no atoms (a CIF needs at least one site).
    """
    from pymatgen.io.cif import CifWriter

    if len(numbers) == 0:
        raise BadInputError(f"no atoms to write to {path}")
    path = Path(path)
    CifWriter(atoms_to_structure(positions, numbers, spec)).write_file(str(path))
    return path
