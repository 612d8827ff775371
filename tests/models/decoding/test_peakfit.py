"""The training-free decoder: atoms back from a density grid by peaks and a least-squares fit."""

from __future__ import annotations

import numpy as np
import pytest

from crystalgrid.grids import density_grid
from crystalgrid.models.decoding.peakfit import fit_amplitudes, fit_atoms
from crystalgrid.models.scoring.decoders import score_peak_fit
from crystalgrid.models.scoring.distances import nearest_distances
from crystalgrid.spec import GridSpec

SPEC = GridSpec()


def _fit(positions, numbers, **kw):
    positions = np.asarray(positions, dtype=float)
    numbers = np.asarray(numbers)
    grid = density_grid(positions, numbers, SPEC)
    return fit_atoms(grid, SPEC, **kw)


def test_one_atom_exactly():
    pos, z = _fit([[4.93, 5.21, 5.07]], [26])
    assert z.tolist() == [26]
    assert np.linalg.norm(pos[0] - [4.93, 5.21, 5.07]) < 0.01


def test_atoms_closer_than_two_sigma_are_split():
    """1.6 Å apart (one peak in the grid): the residual round and the refinement find both."""
    true = np.array([[4.2, 5.0, 5.0], [5.8, 5.0, 5.0]])
    pos, z = _fit(true, [14, 8])
    assert len(z) == 2
    d, idx = nearest_distances(true, pos)
    assert d.max() < 0.1
    assert z[idx].tolist() == [14, 8]
    # Without residual rounds, one peak is one atom.
    _, z0 = _fit(true, [14, 8], rounds=0, refine=False)
    assert len(z0) == 1


def test_a_rock_salt_cell_is_recovered():
    a = 5.64  # NaCl
    na = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * a + 2.2
    cl = na + np.array([0.5, 0, 0]) * a
    true = np.concatenate([na, cl])
    numbers = np.array([11] * 4 + [17] * 4)
    pos, z = _fit(true, numbers)
    assert len(z) == 8
    d, idx = nearest_distances(true, pos)
    assert d.max() < 0.1 and (z[idx] == numbers).all()


def test_white_noise_of_one_percent_adds_no_atom():
    """A model's density is never exact: noise of 1% of the grid's maximum on a BaO cell (a
    heavy and a light atom; three noise draws) leaves the atoms, their count and their species
    as they were. (Without the noise-aware thresholds the fit found 18-27 atoms here.)"""
    from crystalgrid.models.decoding.peakfit import noise_level

    a = 5.52
    ba = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * a + 2.2
    true = np.concatenate([ba, ba + np.array([0.5, 0, 0]) * a])
    numbers = np.array([56] * 4 + [8] * 4)
    grid = density_grid(true, numbers, SPEC)
    rng = np.random.default_rng(1)
    for _ in range(3):
        sigma = 0.01 * float(grid.max())
        noisy = grid + rng.normal(0, sigma, SPEC.shape)
        assert noise_level(noisy) == pytest.approx(sigma, rel=0.3)  # the atoms add a little
        pos, z = fit_atoms(noisy, SPEC)
        assert len(z) == 8
        d, idx = nearest_distances(true, pos)
        assert d.max() < 0.2 and (z[idx] == numbers).all()


def test_noise_clipped_at_zero_adds_no_atom():
    """Noise clipped at zero, as any non-negative output (a softplus) is, raises the grid
    where the density is low: the fit models that (the expected clipped density) instead of
    taking the raise for atoms. The same BaO cell, noise of 1% of its maximum, three draws."""
    from crystalgrid.models.decoding.peakfit import clipped_noise_level

    a = 5.52
    ba = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * a + 2.2
    true = np.concatenate([ba, ba + np.array([0.5, 0, 0]) * a])
    numbers = np.array([56] * 4 + [8] * 4)
    grid = density_grid(true, numbers, SPEC)
    assert clipped_noise_level(grid) == 0.0  # an Eq. (1) density: no voxel is exactly 0
    rng = np.random.default_rng(2)
    sigma = 0.01 * float(grid.max())
    for _ in range(3):
        clipped = np.maximum(grid + rng.normal(0, sigma, SPEC.shape), 0.0)
        assert clipped_noise_level(clipped) == pytest.approx(sigma, rel=0.5)
        pos, z = fit_atoms(clipped, SPEC)
        assert len(z) == 8
        d, idx = nearest_distances(true, pos)
        assert d.max() < 0.2 and (z[idx] == numbers).all()
    # Fitting the grid as if it were not clipped turns the raise into atoms.
    _, z_plain = fit_atoms(clipped, SPEC, clipped=False)
    assert len(z_plain) > 8


def test_a_blurred_grid_keeps_its_atoms_and_species():
    """A model's density is also smoother than the truth: the BaO cell blurred by a Gaussian
    of 0.3 Å (edges continued past the faces) is decoded with the width fitted to
    sqrt(1 + 0.3^2) sigma, its electrons integrated, so Z and the count survive. With the
    width held at sigma the same grid gives wrong species."""
    from scipy import ndimage

    a = 5.52
    ba = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * a + 2.2
    true = np.concatenate([ba, ba + np.array([0.5, 0, 0]) * a])
    numbers = np.array([56] * 4 + [8] * 4)
    blurred = ndimage.gaussian_filter(
        density_grid(true, numbers, SPEC), 0.3 / SPEC.voxel, mode="nearest"
    )
    pos, z = fit_atoms(blurred, SPEC)
    assert len(z) == 8
    d, idx = nearest_distances(true, pos)
    assert d.max() < 0.1 and (z[idx] == numbers).all()
    _, z_fixed = fit_atoms(blurred, SPEC, fit_width=False, border=0)
    assert sorted(z_fixed.tolist()) != sorted(numbers.tolist())
    # At known positions, the same holds for the amplitudes alone.
    assert (
        fit_amplitudes(blurred, true, SPEC, fit_width=True, border=1).tolist() == numbers.tolist()
    )
    assert fit_amplitudes(blurred, true, SPEC).tolist() != numbers.tolist()


def test_empty_and_bad_grids():
    pos, z = fit_atoms(np.zeros(SPEC.shape, np.float32), SPEC)
    assert pos.shape == (0, 3) and z.shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        fit_atoms(np.zeros((10, 10, 10)), SPEC)
    bad = np.zeros(SPEC.shape)
    bad[3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_atoms(bad, SPEC)


def test_noise_never_breaks_it():
    """A reconstruction can be anything: the fit returns finite atoms inside the box."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for scale in (0.01, 0.3, 3.0):
        grid = ndimage.gaussian_filter(np.abs(rng.normal(0, scale, SPEC.shape)), 1.5)
        pos, z = fit_atoms(grid, SPEC, max_atoms=40)
        assert len(z) <= 40
        assert np.all(np.isfinite(pos)) and np.all((pos >= 0) & (pos < SPEC.side))
        assert np.all((z >= 1) & (z <= 118))


def test_score_on_a_store(store):
    import crystalgrid

    view = crystalgrid.open_dataset(store).split("test")
    result = score_peak_fit(view, limit=6)
    assert result["n_samples"] == 6
    assert result["decoder"]["name"] == "peak-fit"
    # The density carries the atoms: on true grids nearly every atom comes back.
    assert result["true_within_radius"] > 0.9
