"""Physics of the density and species grids."""

from __future__ import annotations

import numpy as np
import pytest

from crystalgrid.grids import density_grid, density_grid_reference, species_grid
from crystalgrid.grids.numpy_backend import (
    LOW_RANK_MIN_ATOMS,
    axis_factors,
    factor_bases,
    low_rank_density,
)
from crystalgrid.spec import GridSpec

SPEC = GridSpec()


def test_isolated_atom_peak_is_z_times_norm():
    h = SPEC.voxel
    centre = np.array([[15.5 * h, 15.5 * h, 15.5 * h]])  # the centre of voxel (15, 15, 15)
    grid = density_grid(centre, [26], SPEC)
    expected = 26 / (SPEC.sigma**3 * (2 * np.pi) ** 1.5)
    assert grid[15, 15, 15] == pytest.approx(expected, rel=1e-6)
    assert np.unravel_index(grid.argmax(), grid.shape) == (15, 15, 15)
    # One voxel away along x: the Gaussian factor exp(-h^2 / 2 sigma^2).
    assert grid[16, 15, 15] == pytest.approx(expected * np.exp(-(h**2) / 2), rel=1e-6)


def test_isolated_atom_integrates_to_z():
    spec = GridSpec(side=14.0, bins=56)
    grid = density_grid([[7.0, 7.0, 7.0]], [8], spec, dtype=np.float64)
    assert grid.sum() * spec.voxel**3 == pytest.approx(8.0, rel=1e-4)


def test_translation_by_whole_voxels_shifts_the_grid():
    rng = np.random.default_rng(3)
    positions = rng.uniform(3.0, 6.0, size=(6, 3))
    numbers = rng.integers(1, 90, size=6)
    shift = np.array([2, -1, 3])
    a = density_grid(positions, numbers, SPEC, dtype=np.float64)
    b = density_grid(positions + shift * SPEC.voxel, numbers, SPEC, dtype=np.float64)
    # Compare away from the faces, where no atom's tail was clipped differently.
    inner = (slice(5, 20), slice(5, 20), slice(5, 20))
    moved = (slice(7, 22), slice(4, 19), slice(8, 23))
    np.testing.assert_allclose(b[moved], a[inner], rtol=1e-9, atol=1e-12)
    sa, sb = (
        species_grid(positions, numbers, SPEC),
        species_grid(positions + shift * SPEC.voxel, numbers, SPEC),
    )
    np.testing.assert_array_equal(sb[moved], sa[inner])


@pytest.mark.parametrize("n_atoms", [1, 7, 40, 300])
def test_density_matches_the_straightforward_evaluation(n_atoms):
    rng = np.random.default_rng(n_atoms)
    # Atoms inside the box and in the margin around it, as in a crop; the first one inside.
    positions = rng.uniform(-4.0, 14.0, size=(n_atoms, 3))
    positions[0] = rng.uniform(2.0, 8.0, size=3)
    numbers = rng.integers(1, 95, size=n_atoms)
    fast = density_grid(positions, numbers, SPEC)
    exact = density_grid_reference(positions, numbers, SPEC)
    assert fast.dtype == np.float32 and fast.shape == (30, 30, 30)
    assert np.abs(fast - exact).max() <= SPEC.tolerance * exact.max()


def test_no_atoms_gives_empty_grids():
    assert not density_grid(np.zeros((0, 3)), [], SPEC).any()
    assert not species_grid(np.zeros((0, 3)), [], SPEC).any()


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="positions but"):
        density_grid([[1.0, 2.0, 3.0]], [1, 2], SPEC)
    with pytest.raises(ValueError, match="finite"):
        species_grid([[np.nan, 2.0, 3.0]], [1], SPEC)


def test_species_marks_exactly_the_voxels_within_the_radius():
    position = np.array([[4.9, 5.13, 5.31]])
    grid = species_grid(position, [14], SPEC)
    c = SPEC.centres()
    d = np.sqrt(
        (c[:, None, None] - 4.9) ** 2
        + (c[None, :, None] - 5.13) ** 2
        + (c[None, None, :] - 5.31) ** 2
    )
    np.testing.assert_array_equal(grid == 14, d <= SPEC.species_radius)
    assert set(np.unique(grid)) == {0, 14}


def test_species_nearest_atom_wins():
    # Two atoms 0.6 Å apart: their 0.5 Å balls overlap; each shared voxel goes to the nearer.
    positions = np.array([[5.0, 5.0, 5.0], [5.6, 5.0, 5.0]])
    grid = species_grid(positions, [8, 26], SPEC)
    c = SPEC.centres()
    X, Y, Z = np.meshgrid(c, c, c, indexing="ij")
    d0 = np.sqrt((X - 5.0) ** 2 + (Y - 5) ** 2 + (Z - 5) ** 2)
    d1 = np.sqrt((X - 5.6) ** 2 + (Y - 5) ** 2 + (Z - 5) ** 2)
    r = SPEC.species_radius
    expected = np.where((d0 <= r) & ((d0 < d1) | (d1 > r)), 8, 0)
    expected = np.where((d1 <= r) & ((d1 < d0) | (d0 > r)), 26, expected)
    tie = (d0 == d1) & (d0 <= r)
    expected[tie] = 8  # equal distances: the atom listed first
    np.testing.assert_array_equal(grid, expected)
    assert (grid == 8).any() and (grid == 26).any()


def test_species_radius_and_box_edges():
    # An atom just outside the box still marks the boundary voxels it reaches.
    grid = species_grid([[-0.2, 5.0, 5.0]], [3], SPEC)
    assert grid[0].any() and not grid[1:].any()
    assert not species_grid([[5.0, 5.0, 5.0]], [3], GridSpec(species_radius=0.0)).any()


def test_spec_validation_and_round_trip():
    spec = GridSpec(side=12.0, bins=40, sigma=0.8, species_radius=0.4)
    assert GridSpec.from_dict(spec.to_dict()) == spec
    assert spec.voxel == pytest.approx(0.3)
    with pytest.raises(ValueError, match="bins"):
        GridSpec(bins=1)
    with pytest.raises(ValueError, match="sigma"):
        GridSpec(sigma=0)
    with pytest.raises(ValueError, match="unknown"):
        GridSpec.from_dict({"side": 10, "colour": "red"})


def _crop_cloud(n_atoms: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Atoms of a crop: inside the box and in the margin within the cutoff, some on the faces."""
    rng = np.random.default_rng(seed)
    low, high = SPEC.centres()[0] - SPEC.cutoff, SPEC.centres()[-1] + SPEC.cutoff
    positions = rng.uniform(low, high, size=(n_atoms, 3))
    positions[:6, 0] = positions[6:12, 2] = 0.0  # on the lower faces (inside the box)
    positions[12:18, 0] = positions[18:24, 2] = SPEC.side  # on the upper faces (beyond it)
    return positions, rng.integers(1, 95, size=n_atoms)


def test_factor_bases_are_orthonormal_small_and_close_to_every_factor():
    bases = factor_bases(SPEC)
    low, high = SPEC.centres()[0] - SPEC.cutoff, SPEC.centres()[-1] + SPEC.cutoff
    ranges = ((low, 0.0), (0.0, SPEC.side), (SPEC.side, high))
    rng = np.random.default_rng(0)
    for side, (start, stop) in enumerate(ranges):
        basis = bases.sides[bases.starts[side] : bases.starts[side + 1]]
        np.testing.assert_allclose(basis @ basis.T, np.eye(len(basis)), atol=1e-12)
        assert len(basis) < SPEC.bins // (1 if side == 1 else 3)
        u = rng.uniform(start, stop, 2000)
        factors = np.exp(-((u[:, None] - SPEC.centres()) ** 2) / (2 * SPEC.sigma**2))
        residual = factors - (factors @ basis.T) @ basis
        # The residual is checked every 1/64 voxel: random positions come within 1% of it.
        assert np.abs(residual).max() <= 1.01 * bases.residual <= 1.01 * SPEC.tolerance / 100
    assert len(bases.whole) < SPEC.bins


@pytest.mark.parametrize("seed", [0, 1])
def test_low_rank_density_equals_the_full_product(seed):
    positions, numbers = _crop_cloud(700, seed)
    weights = numbers * SPEC.norm
    fx, fy, fz = axis_factors(positions, SPEC, np.float64)
    full = np.einsum("mi,mj,mk->ijk", fx * weights[:, None], fy, fz)
    low = low_rank_density(positions, weights, factor_bases(SPEC), SPEC, dtype=np.float64)
    assert low.dtype == np.float64 and low.shape == SPEC.shape
    # Each atom's error is at most 3 residuals of its peak; they do not add up in practice.
    assert np.abs(low - full).max() <= 3 * factor_bases(SPEC).residual * full.max()
    # The builder's float32 grid, through density_grid, within the tolerance of the exact one.
    fast = density_grid(positions, numbers, SPEC)
    assert len(positions) >= LOW_RANK_MIN_ATOMS and fast.dtype == np.float32
    np.testing.assert_array_equal(
        fast, low_rank_density(positions, weights, factor_bases(SPEC), SPEC)
    )
    exact = density_grid_reference(positions, numbers, SPEC)
    assert np.abs(fast - exact).max() <= SPEC.tolerance / 10 * exact.max()


@pytest.mark.parametrize(
    "spec", [GridSpec(side=14.0, bins=56), GridSpec(bins=20, sigma=1.5), GridSpec(sigma=0.3)]
)
def test_other_specs_keep_the_tolerance(spec):
    """Finer voxels get their own bases; narrow Gaussians, which need every voxel, get none
    and are computed as one product."""
    assert (factor_bases(spec) is None) == (spec.sigma == 0.3)
    rng = np.random.default_rng(5)
    positions = rng.uniform(-spec.cutoff, spec.side + spec.cutoff, size=(400, 3))
    positions[0] = spec.side / 2
    numbers = rng.integers(1, 95, size=400)
    fast = density_grid(positions, numbers, spec)
    exact = density_grid_reference(positions, numbers, spec)
    assert np.abs(fast - exact).max() <= spec.tolerance * exact.max()


def _species_brute_force(positions: np.ndarray, numbers: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Every voxel against every atom: the nearest within the radius, ties to the first."""
    c = spec.centres()
    voxels = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 1, 3)
    offset = voxels - positions[None, :, :]
    dist2 = offset[..., 0] ** 2 + offset[..., 1] ** 2 + offset[..., 2] ** 2
    nearest = dist2.argmin(axis=1)  # the first of equal minima
    hit = dist2[np.arange(len(voxels)), nearest] <= spec.species_radius**2
    return np.where(hit, numbers[nearest], 0).astype(np.uint8).reshape(spec.shape)


@pytest.mark.parametrize("case", ["crop", "mirrored ties", "close pairs"])
@pytest.mark.parametrize(
    "spec", [SPEC, GridSpec(species_radius=1.1), GridSpec(side=7.0, bins=17)], ids=str
)
def test_species_equals_every_voxel_against_every_atom(case, spec):
    rng = np.random.default_rng(len(case))
    if case == "crop":
        positions = rng.uniform(-1.0, spec.side + 1.0, size=(120, 3))
    elif case == "mirrored ties":  # pairs at equal distance from a voxel centre
        centre = (rng.integers(0, spec.bins, size=(40, 3)) + 0.5) * spec.voxel
        shift = rng.uniform(-0.4, 0.4, size=(40, 3)) * rng.integers(0, 2, size=(40, 3))
        positions = np.concatenate([centre + shift, centre - shift])
    else:  # atoms closer than twice the radius, and exact duplicates
        base = rng.uniform(0.0, spec.side, size=(40, 3))
        positions = np.concatenate([base, base + rng.normal(0, 0.2, base.shape), base[:5]])
    numbers = rng.integers(1, 100, size=len(positions))
    expected = _species_brute_force(positions, numbers, spec)
    np.testing.assert_array_equal(species_grid(positions, numbers, spec), expected)
