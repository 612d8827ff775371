"""Density and species grids of atoms placed in the box: the numpy backend (the builder's).

Density, Eq. (1) of Hoffmann et al. (2019)::

    M[i, j, k] = sum_m Z_m exp(-|r_m - c_ijk|^2 / (2 sigma^2)) / (sigma^3 (2 pi)^(3/2))

with ``c_ijk`` the voxel centre (Å). A Gaussian factorises along the axes,
``exp(-|r - c|^2 / 2 s^2) = gx[i] gy[j] gz[k]``, so one atom costs ``3 * bins`` exponentials
and the grid is a matrix product ``(bins x N) @ (N x bins^2)`` (:func:`density_grid`). For crops
(hundreds of atoms with the margin of periodic images) the factors are first expressed in small
orthonormal bases (:func:`factor_bases`), which cuts the products per atom from ``bins^3`` to
~20^3 inside the box and ~6 x 21 x 6 beyond its faces (:func:`low_rank_density`).
:func:`density_grid_reference` is the straightforward evaluation (every atom against every
voxel, float64) kept as the yardstick for tests and benchmarks.

Species: each voxel holds the atomic number of the nearest atom whose distance to the voxel
centre is at most ``spec.species_radius``, else 0 (:func:`species_grid`).

Positions are box coordinates (Å), shape (N, 3); numbers are atomic numbers, shape (N,).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from crystalgrid.grids.common import SMALLEST_EXPONENT
from crystalgrid.spec import GridSpec

__all__ = [
    "DENSITY_METHOD",
    "LOW_RANK_MIN_ATOMS",
    "FactorBases",
    "axis_factors",
    "density_grid",
    "density_grid_reference",
    "factor_bases",
    "low_rank_density",
    "species_grid",
]


def _check(positions: np.ndarray, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(numbers).reshape(-1)
    if len(positions) != len(numbers):
        raise ValueError(f"{len(positions)} positions but {len(numbers)} atomic numbers")
    if not np.all(np.isfinite(positions)):
        raise ValueError("atom positions must be finite")
    return positions, numbers


def axis_factors(positions: np.ndarray, spec: GridSpec, dtype=np.float32) -> np.ndarray:
    """Per-axis Gaussian factors, shape (3, N, bins).

    ``factors[a, m, i] = exp(-(r_m[a] - c_i)^2 / (2 sigma^2))``, never below exp(-25) (the
    difference is < 1e-10 of an atom's peak).
    """
    delta = positions.T[:, :, None] - spec.centres()[None, None, :]
    exponent = (delta * delta).astype(dtype)
    exponent *= -0.5 / spec.sigma**2
    np.maximum(exponent, SMALLEST_EXPONENT, out=exponent)
    return np.exp(exponent, out=exponent)


def density_grid(
    positions: np.ndarray, numbers: np.ndarray, spec: GridSpec, *, dtype=np.float32
) -> np.ndarray:
    """Density grid, shape ``spec.shape``, in electrons per Å^3 (Z-weighted Gaussians).

    Up to :data:`LOW_RANK_MIN_ATOMS` atoms (single cells), one matrix product of the per-axis
    factors. From there on (crops with their margin of periodic images), the factors are
    expanded in the small bases of :func:`factor_bases` first (:func:`low_rank_density`).
    Computed in ``dtype`` (float32 default: ~1e-6 relative rounding).
    """
    positions, numbers = _check(positions, numbers)
    if len(positions) == 0:
        return np.zeros(spec.shape, dtype=dtype)
    weights = numbers.astype(np.float64) * spec.norm
    if len(positions) >= LOW_RANK_MIN_ATOMS and (bases := factor_bases(spec)) is not None:
        return low_rank_density(positions, weights, bases, spec, dtype=dtype)
    fx, fy, fz = axis_factors(positions, spec, dtype)
    fx *= weights.astype(dtype)[:, None]
    plane = np.einsum("mj,mk->mjk", fy, fz).reshape(len(positions), spec.bins * spec.bins)
    return (fx.T @ plane).reshape(spec.shape)


#: Atom counts from which :func:`density_grid` works in the small bases (measured with
#: ``benchmarks/bench_grids.py --ab``: the fixed cost of the bases' expansion pays from ~200
#: atoms; single cells stay below).
LOW_RANK_MIN_ATOMS = 200

#: The version of the density evaluation. A store records the one it was gridded with
#: (stores without the record: ``separable/1``, products of the full factors), and builds
#: resume only stores of the same version: the two agree within the tolerance, not bit for bit.
DENSITY_METHOD = "separable-low-rank/1"


@dataclass(frozen=True)
class FactorBases:
    """Orthonormal bases of the per-axis Gaussian factors of atoms on each side of the box.

    ``factor(u) = exp(-(c - u)^2 / (2 sigma^2))``, the ``bins`` values of an atom at ``u`` Å
    along one axis, is a smooth function of ``u``: the factors of all atoms below the box
    (``u < 0``), inside it or above it (``u >= side``) lie within :attr:`residual` of a
    subspace of a few dimensions (at the defaults 6, 20 and 6 of the 30), and those of any atom
    within the cutoff in a subspace of :attr:`whole` rows (21).

    Attributes:
        sides: the three bases stacked, shape ``(rank_below + rank_inside + rank_above, bins)``,
            float64, orthonormal rows within each side.
        starts: row offsets of the three sides in :attr:`sides` and the total, 4 ints.
        whole: one basis for every position within the cutoff, shape ``(rank, bins)``.
        residual: the largest distance of a factor from its side's subspace, as a fraction of
            the factor's peak (``tolerance / 100`` at most).
    """

    sides: np.ndarray
    starts: tuple[int, int, int, int]
    whole: np.ndarray
    residual: float


@functools.lru_cache(maxsize=8)
def factor_bases(spec: GridSpec) -> FactorBases | None:
    """The bases of :class:`FactorBases` for ``spec``, or None where one would need every voxel.

    Each basis is the leading right singular vectors of the factors of positions spaced 1/16
    voxel over its range; its rank is the smallest whose largest residual, over positions
    spaced 1/64 voxel, is at most ``spec.tolerance / 100`` of the peak. Computed once per
    process and spec (milliseconds at the defaults).
    """
    centres = spec.centres()
    low, high = centres[0] - spec.cutoff, centres[-1] + spec.cutoff
    target = spec.tolerance / 100
    ranges = ((low, 0.0), (0.0, spec.side), (spec.side, high), (low, high))
    step = spec.voxel / 16
    bases, residual = [], 0.0
    for start, stop in ranges:
        fit = _factors_at(np.arange(start, stop + step, step), centres, spec.sigma)
        check = _factors_at(np.arange(start, stop + step, step / 4), centres, spec.sigma)
        rows = np.linalg.svd(fit, full_matrices=False)[2]
        for rank in range(1, spec.bins):
            basis = rows[:rank]
            worst = float(np.abs(check - (check @ basis.T) @ basis).max(initial=0.0))
            if worst <= target:
                break
        else:
            return None  # no subspace smaller than the voxels themselves
        bases.append(basis)
        residual = max(residual, worst)
    ranks = [len(b) for b in bases[:3]]
    starts = (0, ranks[0], ranks[0] + ranks[1], sum(ranks))
    return FactorBases(np.vstack(bases[:3]), starts, bases[3], residual)


def _factors_at(u: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian factors of positions ``u`` (Å, shape (M,)) at ``centres``, shape (M, bins)."""
    return np.exp(-((u[:, None] - centres[None, :]) ** 2) / (2 * sigma**2))


def low_rank_density(
    positions: np.ndarray,
    weights: np.ndarray,
    bases: FactorBases,
    spec: GridSpec,
    *,
    dtype=np.float32,
) -> np.ndarray:
    """The density of :func:`density_grid` through the small bases of the factors.

    With ``P = B f`` an atom's factors in the bases (x and z: its side's basis, y: the whole
    one), the grid is ``sum_m w_m f_x f_y f_z ~= C x_x Bx x_y By x_z Bz`` with the core
    ``C = sum_m w_m P_x P_y P_z``: ``r_x r_y r_z`` products per atom instead of ``bins^3``
    (at the defaults 20 x 21 x 20 for atoms inside the box along x and z, 6 x 21 x 6 beyond
    faces). Atoms are grouped by side along x and z; each group adds one matrix product to
    its block of ``C``. The error stays within about ``3 * bases.residual`` of each atom's
    peak, plus the rounding of ``dtype``.

    ``positions`` (N, 3) Å in box coordinates, ``weights`` (N,) the atoms' peaks divided by
    the unit Gaussian's (``Z * spec.norm``). Returns shape ``spec.shape``, ``dtype``.
    """
    bins, starts = spec.bins, bases.starts
    # Sort the atoms by side along z, then x: every group is a contiguous run.
    side = np.searchsorted(np.array([0.0, spec.side]), positions[:, ::2], side="right")
    group = side[:, 1] * 3 + side[:, 0]
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(10)).tolist()
    factors = _factors_atoms_last(positions[order], spec, dtype)  # (3, bins, N)
    factors[0] *= weights[order].astype(dtype)
    sides = bases.sides.astype(dtype)
    whole = bases.whole.astype(dtype)
    along_x = factors[0].T @ sides.T  # (N, ranks): atoms first, the products' right operand
    along_y = whole @ factors[1]  # (rank_y, N)
    along_z = sides @ factors[2]  # (ranks, N)
    core = np.zeros((len(whole), starts[3], starts[3]), dtype=dtype)  # (y, z, x)
    for z_side in range(3):
        first, last = bounds[3 * z_side], bounds[3 * z_side + 3]
        if first == last:
            continue
        z0, z1 = starts[z_side], starts[z_side + 1]
        # (rank_y, rank_z, atoms), atoms last: one broadcast multiply over long rows.
        plane = (along_y[:, None, first:last] * along_z[None, z0:z1, first:last]).reshape(
            -1, last - first
        )
        for x_side in range(3):
            a0, a1 = bounds[3 * z_side + x_side], bounds[3 * z_side + x_side + 1]
            if a0 == a1:
                continue
            x0, x1 = starts[x_side], starts[x_side + 1]
            block = plane[:, a0 - first : a1 - first] @ along_x[a0:a1, x0:x1]
            core[:, z0:z1, x0:x1] += block.reshape(len(whole), z1 - z0, x1 - x0)
    # Back to voxels: x, then z, then y.
    rank_y, ranks = core.shape[0], starts[3]
    grid = core.reshape(rank_y * ranks, ranks) @ sides  # (y, z, x)
    grid = grid.reshape(rank_y, ranks, bins).transpose(0, 2, 1).reshape(-1, ranks) @ sides
    grid = (whole.T @ grid.reshape(rank_y, bins * bins)).reshape(bins, bins, bins)  # (y, x, z)
    return np.ascontiguousarray(grid.transpose(1, 0, 2))


def _factors_atoms_last(positions: np.ndarray, spec: GridSpec, dtype) -> np.ndarray:
    """:func:`axis_factors` laid out ``(3, bins, N)`` and computed in ``dtype`` throughout."""
    scalar = np.dtype(dtype).type
    coords = positions.T.astype(dtype)
    exponent = spec.centres().astype(dtype)[None, :, None] - coords[:, None, :]
    exponent *= exponent
    exponent *= scalar(-0.5 / spec.sigma**2)
    np.maximum(exponent, scalar(SMALLEST_EXPONENT), out=exponent)
    return np.exp(exponent, out=exponent)


def density_grid_reference(
    positions: np.ndarray, numbers: np.ndarray, spec: GridSpec, *, block: int = 64
) -> np.ndarray:
    """The straightforward float64 evaluation: every atom against every voxel, no cutoff.

    Kept as the yardstick of :func:`density_grid` (tests, benchmarks). ``block`` atoms are
    broadcast at a time to bound memory (block x bins^3 doubles).
    """
    positions, numbers = _check(positions, numbers)
    c = spec.centres()
    x, y, z = (a.reshape(-1) for a in np.meshgrid(c, c, c, indexing="ij"))
    grid = np.zeros(x.size)
    for start in range(0, len(positions), block):
        p = positions[start : start + block]
        d2 = (x - p[:, :1]) ** 2 + (y - p[:, 1:2]) ** 2 + (z - p[:, 2:3]) ** 2  # (block, voxels)
        weights = numbers[start : start + block].astype(np.float64)
        grid += weights @ np.exp(d2 * (-0.5 / spec.sigma**2))
    return (grid * spec.norm).reshape(spec.shape)


def species_grid(positions: np.ndarray, numbers: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Species grid, shape ``spec.shape``, uint8.

    A voxel holds the atomic number of the nearest atom within ``spec.species_radius`` (Å)
    of its centre, 0 if there is none. Ties in distance go to the atom listed first.
    """
    positions, numbers = _check(positions, numbers)
    grid = np.zeros(spec.shape, dtype=np.uint8)
    radius, h, bins = spec.species_radius, spec.voxel, spec.bins
    # Only atoms within the radius of the cube of voxel centres can mark a voxel.
    gap = np.maximum(np.maximum(0.5 * h - positions, positions - (spec.side - 0.5 * h)), 0.0)
    near = (gap * gap).sum(axis=1) <= radius * radius
    atom_index = np.flatnonzero(near)
    if len(atom_index) == 0 or radius == 0:
        return grid
    coords = positions[near].T  # (3, N)
    # Candidate voxels of each atom along each axis: the indices whose centres lie within
    # +-radius, shape (3, span, N), and their squared offsets from the atom (Å^2). Atoms are
    # the last axis throughout, so every operation runs over long rows.
    span = int(np.floor(2 * radius / h + 1e-9)) + 1
    first = np.ceil((coords - radius) / h - 0.5).astype(np.int64)
    index = first[:, None, :] + np.arange(span)[None, :, None]
    offset = (index + 0.5) * h - coords[:, None, :]
    offset *= offset
    inside = (index >= 0) & (index < bins)
    # Squared distances of every candidate, (span, span, span, N), summed x + y + z.
    dist2 = offset[0][:, None, None, :] + offset[1][None, :, None, :]
    dist2 = dist2 + offset[2][None, None, :, :]
    valid = dist2 <= radius * radius
    valid &= inside[0][:, None, None, :] & inside[1][None, :, None, :] & inside[2][None, None, :]
    sx, sy, sz, atom = np.nonzero(valid)
    if len(atom) == 0:
        return grid
    flat = (index[0, sx, atom] * bins + index[1, sy, atom]) * bins + index[2, sz, atom]
    dist2 = dist2[sx, sy, sz, atom]
    # Voxels within reach of several atoms (rare: atoms closer than twice the radius) go to
    # the nearest, ties to the lower atom index; all others to their only atom.
    order = np.argsort(flat, kind="stable")
    repeated = flat[order[1:]] == flat[order[:-1]]
    if repeated.any():
        shared = np.zeros(len(flat), dtype=bool)
        shared[order[1:][repeated]] = True
        shared[order[:-1][repeated]] = True
        contested = np.flatnonzero(shared)
        ranked = contested[np.lexsort((atom[contested], dist2[contested], flat[contested]))]
        nearest = np.r_[True, flat[ranked[1:]] != flat[ranked[:-1]]]
        keep = ~shared
        keep[ranked[nearest]] = True
        flat, atom = flat[keep], atom[keep]
    grid.reshape(-1)[flat] = numbers[atom_index[atom]]
    return grid
