"""Samples: a placement of a crystal and the two grids made from it, with its ground truth.

This is the unit the dataset stores: ``make_samples(structure, "mp-149", "repeated")`` gives
the grids of one crystal exactly as ``crystalgrid build`` writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from crystalgrid.grids import density_grid, species_grid
from crystalgrid.grids.placement import Crystal, Placement, Representation, placements
from crystalgrid.spec import GridSpec

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["Sample", "make_samples", "sample_from_placement"]


@dataclass(frozen=True)
class Sample:
    """One training example.

    Attributes:
        material_id: the crystal's id.
        transform: (4, 4) crystal Cartesian Å -> box Å.
        density: ``spec.shape`` float32, electrons per Å^3.
        species: ``spec.shape`` uint8: the atomic number of the nearest ground-truth atom
            within the species radius of each voxel centre, 0 if none.
        atom_positions: (n, 3) box Å of the atoms inside the box.
        atom_numbers: (n,) uint8 atomic numbers of those atoms.
        n_outside: cell atoms that fell outside the box (``single`` only).
    """

    material_id: str
    transform: np.ndarray
    density: np.ndarray
    species: np.ndarray
    atom_positions: np.ndarray
    atom_numbers: np.ndarray
    n_outside: int


def sample_from_placement(
    placement: Placement, material_id: str, spec: GridSpec, *, dtype=np.float32
) -> Sample:
    """Grid one placement.

    The density sums every atom near the box (a crop's faces see the crystal beyond them);
    the species grid labels the sample's own atoms, those inside the box, so that it is the
    segmentation of exactly the ground truth: an atom outside the box adds density near a
    face but no label.
    """
    return Sample(
        material_id=material_id,
        transform=placement.transform,
        density=density_grid(placement.positions, placement.numbers, spec, dtype=dtype),
        species=species_grid(placement.atom_positions, placement.atom_numbers, spec),
        atom_positions=placement.atom_positions,
        atom_numbers=placement.atom_numbers,
        n_outside=placement.n_outside,
    )


def make_samples(
    structure: Structure | Crystal,
    material_id: str,
    representation: Representation,
    spec: GridSpec | None = None,
    *,
    n_samples: int = 3,
    seed: int = 0,
    rotate: bool | None = None,
) -> list[Sample]:
    """The ``n_samples`` samples of one crystal, reproducible from (seed, material id).

    Args:
        structure: an ordered pymatgen ``Structure`` (or the arrays behind one).
        material_id: the id; it seeds the crystal's random stream together with ``seed``.
        representation: ``"single"`` (rotated unit cell) or ``"repeated"`` (periodic crop).
        spec: the grid geometry; the paper's defaults if None.
        rotate: rotate the samples (default: True for single, False for repeated).

    Raises:
        RejectedStructure: for a disordered, empty or zero-volume structure.
    """
    spec = spec or GridSpec()
    crystal = structure if isinstance(structure, Crystal) else Crystal.from_structure(structure)
    return [
        sample_from_placement(p, material_id, spec)
        for p in placements(
            crystal,
            material_id,
            representation,
            spec,
            n_samples=n_samples,
            seed=seed,
            rotate=rotate,
        )
    ]
