"""The cube symmetries map grids exactly as they map the atoms behind them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crystalgrid.models.training.augment import (  # noqa: E402
    N_CUBE_SYMMETRIES,
    apply_cube_symmetry,
    cube_symmetries,
)
from crystalgrid.spec import GridSpec  # noqa: E402


def _map_atoms(positions: np.ndarray, index: int, side: float) -> np.ndarray:
    """The same symmetry applied to atom positions (Å in the box)."""
    perm = list(itertools.permutations(range(3)))[index // 8]
    mapped = positions[:, perm].copy()
    for axis in range(3):
        if (index % 8) >> axis & 1:
            mapped[:, axis] = side - mapped[:, axis]
    return mapped


def test_the_48_maps_are_distinct_bijections_and_0_is_the_identity():
    grid = torch.arange(4**3).reshape(1, 4, 4, 4).repeat(N_CUBE_SYMMETRIES, 1, 1, 1)
    out = apply_cube_symmetry(grid, torch.arange(N_CUBE_SYMMETRIES))
    assert torch.equal(out[0], grid[0])
    assert len({tuple(o.flatten().tolist()) for o in out}) == N_CUBE_SYMMETRIES
    for o in out:  # every voxel value kept once: a permutation of the voxels
        assert torch.equal(o.flatten().sort().values, grid[0].flatten())


def test_mapped_grids_are_the_grids_of_the_mapped_atoms(paint_atoms):
    spec = GridSpec(bins=12, side=4.0)
    positions = np.array([[0.7, 1.1, 2.9], [3.0, 2.2, 1.0], [1.9, 3.4, 0.4]])
    numbers = np.array([3, 8, 26])
    density, species = paint_atoms(positions, numbers, spec)
    for index in range(N_CUBE_SYMMETRIES):
        expected_d, expected_s = paint_atoms(_map_atoms(positions, index, spec.side), numbers, spec)
        sym = torch.tensor([index])
        got_d = apply_cube_symmetry(torch.from_numpy(density)[None], sym)[0].numpy()
        got_s = apply_cube_symmetry(torch.from_numpy(species)[None], sym)[0].numpy()
        np.testing.assert_allclose(got_d, expected_d, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(got_s, expected_s)


def test_draws_depend_only_on_seed_and_step():
    a = cube_symmetries(64, seed=3, step=10)
    assert torch.equal(a, cube_symmetries(64, seed=3, step=10))
    assert not torch.equal(a, cube_symmetries(64, seed=3, step=11))
    assert int(a.min()) >= 0 and int(a.max()) < N_CUBE_SYMMETRIES


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="one symmetry per grid"):
        apply_cube_symmetry(torch.zeros(2, 4, 4, 4), torch.zeros(3, dtype=torch.long))
