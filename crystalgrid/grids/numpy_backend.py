"""Density and species grids of atoms placed in the box: the numpy backend (the builder's).

Density, Eq. (1) of Hoffmann et al. (2019)::

    M[i, j, k] = sum_m Z_m exp(-|r_m - c_ijk|^2 / (2 sigma^2)) / (sigma^3 (2 pi)^(3/2))

with ``c_ijk`` the voxel centre (Å). A Gaussian factorises along the axes,
``exp(-|r - c|^2 / 2 s^2) = gx[i] gy[j] gz[k]``, so one atom costs ``3 * bins`` exponentials
and the grid is a matrix product ``(bins x N) @ (N x bins^2)`` (:func:`density_grid`), split in
at most nine products so that atoms beyond a face skip the far side of the box.
:func:`density_grid_reference` is the straightforward evaluation (every atom against every
voxel, float64) kept as the yardstick for tests and benchmarks.

Species: each voxel holds the atomic number of the nearest atom whose distance to the voxel
centre is at most ``spec.species_radius``, else 0 (:func:`species_grid`).

Positions are box coordinates (Å), shape (N, 3); numbers are atomic numbers, shape (N,).
"""

from __future__ import annotations

import numpy as np

from crystalgrid.grids.common import SMALLEST_EXPONENT
from crystalgrid.spec import GridSpec

__all__ = ["axis_factors", "density_grid", "density_grid_reference", "species_grid"]


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

    The placement leaves out atoms farther than ``spec.cutoff`` from every voxel centre. In
    large sets (crops with their margin of periodic images), atoms beyond a face of the box
    along x or z are evaluated only on the voxels within the cutoff of that face, which saves
    a fifth of the work; everything else is evaluated in full. Computed in ``dtype`` (float32
    default: ~1e-6 relative rounding).
    """
    positions, numbers = _check(positions, numbers)
    bins = spec.bins
    if len(positions) == 0:
        return np.zeros(spec.shape, dtype=dtype)
    fx, fy, fz = axis_factors(positions, spec, dtype)
    fx *= (numbers.astype(np.float64) * spec.norm).astype(dtype)[:, None]
    if len(positions) < _GROUPING_MIN_ATOMS:  # one product: grouping costs more than it saves
        plane = np.einsum("mj,mk->mjk", fy, fz).reshape(len(positions), bins * bins)
        return (fx.T @ plane).reshape(spec.shape)
    grid = np.zeros(spec.shape, dtype=dtype)
    # Group atoms by side of the box along x and along z: below (0), inside (1), above (2).
    reach = min(bins, int(np.floor(spec.cutoff / spec.voxel - 0.5)) + 1)
    windows = ((0, reach), (0, bins), (bins - reach, bins))
    side_x = np.searchsorted([0.0, spec.side], positions[:, 0], side="right")
    side_z = np.searchsorted([0.0, spec.side], positions[:, 2], side="right")
    group = side_x * 3 + side_z
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(10))
    for g in range(9):
        if bounds[g] < bounds[g + 1]:
            atoms = order[bounds[g] : bounds[g + 1]]
            _add_product(grid, fx, fy, fz, atoms, windows[g // 3], windows[g % 3])
    return grid


#: Atom counts from which :func:`density_grid` groups atoms by side of the box (measured with
#: ``benchmarks/bench_grids.py --ab``: it pays from ~500 atoms, costs up to 2x for single cells).
_GROUPING_MIN_ATOMS = 512


def _add_product(
    grid: np.ndarray,
    fx: np.ndarray,
    fy: np.ndarray,
    fz: np.ndarray,
    atoms: slice | np.ndarray,
    x_window: tuple[int, int],
    z_window: tuple[int, int],
) -> None:
    """``grid[x, :, z] += sum over atoms of fx[x] fy fz[z]`` inside the two windows."""
    (i0, i1), (k0, k1) = x_window, z_window
    ys = fy[atoms]
    plane = np.einsum("mj,mk->mjk", ys, fz[atoms, k0:k1]).reshape(len(ys), -1)
    part = fx[atoms, i0:i1].T @ plane
    grid[i0:i1, :, k0:k1] += part.reshape(i1 - i0, grid.shape[1], k1 - k0)


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
    positions = positions[near]
    if len(positions) == 0 or radius == 0:
        return grid
    # Candidate voxels of each atom: indices whose centres lie within +-radius per axis.
    first = np.ceil((positions - radius) / h - 0.5).astype(np.int64)
    span = int(np.floor(2 * radius / h + 1e-9)) + 1
    steps = np.stack(np.meshgrid(*[np.arange(span)] * 3, indexing="ij"), -1).reshape(-1, 3)
    idx = first[:, None, :] + steps[None, :, :]  # (N, span^3, 3)
    offset = (idx + 0.5) * h - positions[:, None, :]
    dist2 = (offset * offset).sum(axis=-1)
    valid = np.all((idx >= 0) & (idx < bins), axis=-1) & (dist2 <= radius * radius)
    atom, cand = np.nonzero(valid)
    if len(atom) == 0:
        return grid
    flat = np.ravel_multi_index(tuple(idx[atom, cand].T), spec.shape)
    # Nearest atom first per voxel; equal distances keep the lower atom index.
    order = np.lexsort((atom, dist2[atom, cand], flat))
    flat, atom = flat[order], atom[order]
    winners = np.r_[True, flat[1:] != flat[:-1]]
    grid.reshape(-1)[flat[winners]] = numbers[atom_index[atom[winners]]]
    return grid
