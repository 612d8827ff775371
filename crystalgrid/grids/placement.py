"""Where a crystal's atoms land in the box: the two representations of Hoffmann et al. (2019).

A placement is a 4x4 affine ``transform`` from the crystal's Cartesian frame (Å) to box
coordinates (Å) plus the atoms that can touch the grid after it:

- ``single``: the unit cell's own sites (wrapped into the cell, no periodic images), the cell's
  centre (fractional 0.5, 0.5, 0.5) moved to the box centre, under a uniformly random rotation.
  Atoms can fall outside the box (a rotated cell's diagonal often exceeds 10 Å); they still
  shape the density near the faces, are counted in ``n_outside`` and are left out of the
  ground truth.
- ``repeated``: the infinite periodic crystal cropped to the box. Sample 0 puts the cell origin
  at the box corner; later samples shift it by a uniformly random fractional offset, and rotate
  it too when asked.

Randomness comes from :func:`crystal_rng` (seed, material id), so a sample never depends on which
worker made it or in what order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from crystalgrid.errors import RejectedStructure
from crystalgrid.grids.common import (
    REPRESENTATIONS,
    Representation,
    check_representation,
    quaternion_matrix,
)
from crystalgrid.spec import GridSpec
from crystalgrid.validity import MIN_VOLUME

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "REPRESENTATIONS",
    "Crystal",
    "Placement",
    "Representation",
    "crystal_rng",
    "place_repeated",
    "place_single",
    "placements",
    "random_rotation",
    "transform_matrix",
]


@dataclass(frozen=True)
class Crystal:
    """The arrays behind an ordered periodic structure.

    Attributes:
        lattice: (3, 3) lattice vectors as rows, Å.
        frac: (n, 3) fractional coordinates.
        numbers: (n,) atomic numbers (1..118), uint8.
    """

    lattice: np.ndarray
    frac: np.ndarray
    numbers: np.ndarray

    @classmethod
    def from_structure(cls, structure: Structure) -> Crystal:
        """Arrays of a pymatgen ``Structure``.

        Raises:
            RejectedStructure: ``"disordered"`` for partial occupancy or mixed sites (never
                collapsed silently), ``"empty"`` for no sites, ``"zero_volume"`` for a
                degenerate lattice.
        """
        if len(structure) == 0:
            raise RejectedStructure("empty", "the structure has no sites")
        if not structure.is_ordered:
            raise RejectedStructure(
                "disordered", f"{structure.composition.reduced_formula} has partial occupancies"
            )
        numbers = np.array([site.specie.Z for site in structure], dtype=np.int64)
        if numbers.min() < 1 or numbers.max() > 118:
            raise RejectedStructure("unknown_element", "a site is not a real element")
        return cls.from_arrays(structure.lattice.matrix, structure.frac_coords, numbers)

    @classmethod
    def from_arrays(cls, lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray) -> Crystal:
        """Validate and wrap raw arrays (shapes (3,3), (n,3), (n,))."""
        lattice = np.asarray(lattice, dtype=np.float64).reshape(3, 3)
        frac = np.asarray(frac, dtype=np.float64).reshape(-1, 3)
        numbers = np.asarray(numbers)
        if len(numbers) != len(frac):
            raise ValueError(f"{len(frac)} positions but {len(numbers)} atomic numbers")
        volume = float(abs(np.linalg.det(lattice)))
        if not np.all(np.isfinite(lattice)) or not volume > MIN_VOLUME:
            raise RejectedStructure("zero_volume", f"cell volume {volume:.3g} Å^3")
        if not np.all(np.isfinite(frac)):
            raise RejectedStructure("unparsable", "non-finite fractional coordinates")
        return cls(lattice, frac, numbers.astype(np.uint8))

    def __len__(self) -> int:
        return len(self.numbers)


@dataclass(frozen=True)
class Placement:
    """Atoms of one sample in box coordinates.

    Attributes:
        transform: (4, 4) affine map, crystal Cartesian Å -> box Å (``box = T @ [r, 1]``).
        positions: (m, 3) box Å of every atom within ``spec.cutoff`` of a voxel centre
            (for ``repeated``, periodic images included).
        numbers: (m,) atomic numbers, uint8.
        inside: (m,) bool, True for atoms inside the box ``[0, side)^3``: the ground truth.
        n_outside: for ``single``, the cell's atoms that fell outside the box; 0 for
            ``repeated`` (a crop has no "lost" atoms).
    """

    transform: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    inside: np.ndarray
    n_outside: int

    @property
    def atom_positions(self) -> np.ndarray:
        """(n, 3) box Å of the ground-truth atoms (inside the box)."""
        return self.positions[self.inside]

    @property
    def atom_numbers(self) -> np.ndarray:
        """(n,) atomic numbers of the ground-truth atoms."""
        return self.numbers[self.inside]


def crystal_rng(seed: int, material_id: str) -> np.random.Generator:
    """The random stream of one crystal: a function of (seed, material id) alone."""
    digest = hashlib.sha256(material_id.encode("utf-8")).digest()
    words = np.frombuffer(digest[:16], dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *words]))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A (3, 3) rotation drawn uniformly (Haar measure on SO(3)), via a unit quaternion."""
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    return quaternion_matrix(q, np)


def transform_matrix(rotation: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The (4, 4) affine map ``r -> rotation @ (r + before) + after`` (vectors in Å)."""
    t = np.eye(4)
    t[:3, :3] = rotation
    t[:3, 3] = rotation @ before + after
    return t


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transform[:3, :3].T + transform[:3, 3]


def _distance_to_centres(positions: np.ndarray, spec: GridSpec) -> np.ndarray:
    """(m,) distance (Å) from each point to the cube spanned by the voxel centres."""
    lo, hi = 0.5 * spec.voxel, spec.side - 0.5 * spec.voxel
    gap = np.maximum(np.maximum(lo - positions, positions - hi), 0.0)
    return np.sqrt((gap * gap).sum(axis=1))


def _inside(positions: np.ndarray, spec: GridSpec) -> np.ndarray:
    return np.all((positions >= 0.0) & (positions < spec.side), axis=1)


def place_single(crystal: Crystal, spec: GridSpec, rotation: np.ndarray | None = None) -> Placement:
    """The unit cell, centred in the box and rotated by ``rotation`` (identity if None)."""
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    cell_centre = np.full(3, 0.5) @ crystal.lattice
    box_centre = np.full(3, 0.5 * spec.side)
    transform = transform_matrix(rotation, -cell_centre, box_centre)
    cart = np.mod(crystal.frac, 1.0) @ crystal.lattice
    positions = _apply(transform, cart)
    inside = _inside(positions, spec)
    near = _distance_to_centres(positions, spec) <= spec.cutoff
    return Placement(
        transform=transform,
        positions=positions[near],
        numbers=crystal.numbers[near],
        inside=inside[near],
        n_outside=int(len(positions) - inside.sum()),
    )


def place_repeated(
    crystal: Crystal,
    spec: GridSpec,
    offset: np.ndarray | None = None,
    rotation: np.ndarray | None = None,
) -> Placement:
    """The periodic crystal cropped to the box.

    Args:
        offset: fractional coordinates (3,) of the crystal point put at the box corner;
            zeros (the cell origin) if None.
        rotation: rotation (3, 3) applied about the box corner; identity if None.
    """
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    offset = np.zeros(3) if offset is None else np.asarray(offset, dtype=np.float64)
    transform = transform_matrix(rotation, -(offset @ crystal.lattice), np.zeros(3))
    positions, numbers = _images_near_box(crystal, transform, spec)
    return Placement(
        transform=transform,
        positions=positions,
        numbers=numbers,
        inside=_inside(positions, spec),
        n_outside=0,
    )


def _images_near_box(
    crystal: Crystal, transform: np.ndarray, spec: GridSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Every periodic image within ``spec.cutoff`` of a voxel centre, in box Å."""
    reach = spec.cutoff + 0.5 * spec.voxel
    lo, hi = -reach, spec.side + reach
    corners = np.array(
        [[x, y, z] for x in (lo, hi) for y in (lo, hi) for z in (lo, hi)], dtype=np.float64
    )
    # Box corners back to the crystal frame, then to fractional coordinates.
    inverse = np.linalg.inv(transform)
    corner_frac = np.linalg.solve(crystal.lattice.T, _apply(inverse, corners).T).T
    base = np.mod(crystal.frac, 1.0)
    first = np.floor(corner_frac.min(axis=0)) - 1
    last = np.ceil(corner_frac.max(axis=0))
    ranges = [np.arange(a, b + 1) for a, b in zip(first, last, strict=True)]
    shifts = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    # Each cell's box-frame origin is one vector; the atoms are the same offsets from it.
    cell_origin = _apply(transform, (shifts @ crystal.lattice))
    atom_offset = (base @ crystal.lattice) @ transform[:3, :3].T
    # Axis by axis, (cells, atoms): long rows rather than rows of 3. The same sums and
    # distances, in the same order, as _distance_to_centres.
    low, high = 0.5 * spec.voxel, spec.side - 0.5 * spec.voxel
    coords, gap2 = [], np.zeros((len(cell_origin), len(crystal)))
    for axis in range(3):
        coord = cell_origin[:, axis, None] + atom_offset[None, :, axis]
        gap = np.maximum(np.maximum(low - coord, coord - high), 0.0)
        gap2 += gap * gap
        coords.append(coord)
    near = np.sqrt(gap2) <= spec.cutoff
    positions = np.stack([coord[near] for coord in coords], axis=1)
    return positions, np.broadcast_to(crystal.numbers, near.shape)[near]


def placements(
    crystal: Crystal,
    material_id: str,
    representation: Representation,
    spec: GridSpec,
    *,
    n_samples: int = 3,
    seed: int = 0,
    rotate: bool | None = None,
) -> list[Placement]:
    """The ``n_samples`` placements of one crystal, reproducible from (seed, material id).

    Sample ``k`` uses the ``k``-th draw of the crystal's stream, so asking for more samples
    keeps the earlier ones. ``rotate`` defaults to True for ``single`` and False for
    ``repeated``; sample 0 of ``repeated`` is never shifted (cell origin at the box corner)
    but is rotated when ``rotate`` is True.
    """
    check_representation(representation)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    rotate = (representation == "single") if rotate is None else rotate
    rng = crystal_rng(seed, material_id)
    out = []
    for k in range(n_samples):
        # Draw both every time so the stream's use does not depend on the options.
        rotation = random_rotation(rng)
        offset = rng.random(3)
        applied = rotation if rotate else None
        if representation == "single":
            out.append(place_single(crystal, spec, applied))
        else:
            out.append(place_repeated(crystal, spec, None if k == 0 else offset, applied))
    return out
