"""Atoms from species grids (paper appendix D) or class scores, and atoms to pymatgen / CIF."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from crystalgrid.errors import BadInputError
from crystalgrid.models.decoding.segmentation import (
    class_score_peaks,
    decode_atoms,
    decode_class_scores,
)
from crystalgrid.models.decoding.structure import atoms_to_molecule, atoms_to_structure, write_cif
from crystalgrid.models.nets.classes import ClassMap
from crystalgrid.spec import GridSpec

SPEC = GridSpec()
ATOMS = np.array([[2.05, 3.31, 7.77], [5.0, 5.0, 5.0], [7.9, 1.6, 2.2], [4.4, 8.3, 8.45]])
NUMBERS = np.array([8, 26, 56, 1], dtype=np.uint8)


def _match(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(found[:, None] - expected[None], axis=-1)
    return d.argmin(axis=1)


def test_species_grid_from_known_atoms_gives_those_atoms(paint_atoms):
    _, species = paint_atoms(ATOMS, NUMBERS, SPEC)
    pos, z = decode_atoms(species, SPEC)
    assert len(pos) == len(ATOMS)
    j = _match(pos, ATOMS)
    assert sorted(j) == list(range(len(ATOMS)))
    assert np.abs(pos - ATOMS[j]).max() < SPEC.voxel / 2
    assert np.array_equal(z, NUMBERS[j])
    assert pos.dtype == np.float64 and z.dtype == np.uint8


def test_class_grid_with_class_map(paint_atoms):
    _, species = paint_atoms(ATOMS, NUMBERS, SPEC)
    cmap = ClassMap([26, 8, 56, 1])
    classes = cmap.to_classes(species)
    pos_a, z_a = decode_atoms(classes, SPEC, classes=cmap)
    pos_b, z_b = decode_atoms(species, SPEC)
    assert np.array_equal(pos_a, pos_b) and np.array_equal(z_a, z_b)
    _, z_c = decode_atoms(classes, SPEC, classes=[1, 8, 26, 56])
    assert np.array_equal(z_c, z_a)


def test_majority_vote_and_its_tie_break():
    grid = np.zeros(SPEC.shape, dtype=np.uint8)
    grid[10, 10, 10:14] = [26, 26, 26, 8]  # one component, 3 votes for Fe
    grid[20, 20, 20:24] = [26, 8, 26, 8]  # a tie: the lower Z wins
    pos, z = decode_atoms(grid, SPEC)
    assert list(z) == [26, 8]
    h = SPEC.voxel
    np.testing.assert_allclose(pos[0], [10.5 * h, 10.5 * h, 12.0 * h])


def test_26_connectivity_joins_corner_neighbours_and_no_periodic_wrap():
    grid = np.zeros(SPEC.shape, dtype=np.uint8)
    grid[5, 5, 5] = grid[6, 6, 6] = 8  # touch at a corner: one atom
    grid[0, 15, 15] = grid[29, 15, 15] = 8  # opposite faces: two atoms (no wrapping)
    pos, z = decode_atoms(grid, SPEC)
    assert len(z) == 3
    np.testing.assert_allclose(pos[0], [0.5 * SPEC.voxel, 15.5 * SPEC.voxel, 15.5 * SPEC.voxel])


def test_scipy_fallback_gives_the_same_atoms(paint_atoms, monkeypatch):
    _, species = paint_atoms(ATOMS, NUMBERS, SPEC)
    expected = decode_atoms(species, SPEC)
    monkeypatch.setitem(sys.modules, "cc3d", None)  # import cc3d -> ImportError
    got = decode_atoms(species, SPEC)
    assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])


def test_empty_grid_and_bad_shapes():
    pos, z = decode_atoms(np.zeros(SPEC.shape, dtype=np.uint8), SPEC)
    assert pos.shape == (0, 3) and z.shape == (0,)
    with pytest.raises(ValueError, match="does not match"):
        decode_atoms(np.zeros((10, 10, 10)), SPEC)


def test_class_map_round_trip_and_unknown_species():
    cmap = ClassMap([26, 8])
    assert cmap.n_classes == 3 and cmap.species == (8, 26)
    grid = np.array([0, 8, 26, 11], dtype=np.uint8)
    assert list(cmap.to_classes(grid)) == [0, 1, 2, -100]
    assert list(cmap.to_species(np.array([0, 1, 2]))) == [0, 8, 26]
    assert ClassMap(cmap.to_list()) == cmap


def test_structure_molecule_and_cif(tmp_path):
    s = atoms_to_structure(ATOMS, NUMBERS, SPEC)
    assert s.lattice.abc == pytest.approx((10.0, 10.0, 10.0))
    np.testing.assert_allclose(s.cart_coords, ATOMS)
    assert [site.specie.Z for site in s] == list(NUMBERS)
    m = atoms_to_molecule(ATOMS, NUMBERS)
    assert len(m) == 4
    path = write_cif(tmp_path / "x.cif", ATOMS, NUMBERS, spec=SPEC)
    from pymatgen.core import Structure

    back = Structure.from_file(path)
    assert sorted(site.specie.Z for site in back) == sorted(NUMBERS.tolist())
    with pytest.raises(BadInputError, match="no atoms"):
        write_cif(tmp_path / "empty.cif", np.zeros((0, 3)), np.zeros(0), spec=SPEC)


def _scores(
    atoms: np.ndarray, numbers: np.ndarray, cmap: ClassMap, width: float = 0.45, height=12.0
):
    """Logits of a segmenter that is sure near each atom (a Gaussian bump of log-odds)."""
    c = SPEC.centres()
    grid = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)
    logits = np.zeros((cmap.n_classes, *SPEC.shape))
    logits[0] = 4.0  # "no atom" everywhere ...
    for position, z in zip(atoms, numbers, strict=True):
        bump = height * np.exp(-((grid - position) ** 2).sum(-1) / (2 * width**2))
        logits[cmap.class_of_z[z]] += bump  # ... unless an atom is near
    return logits


def test_class_scores_give_the_atoms():
    cmap = ClassMap(NUMBERS)
    pos, z = decode_class_scores(_scores(ATOMS, NUMBERS, cmap), SPEC, cmap)
    j = _match(pos, ATOMS)
    assert sorted(j) == list(range(len(ATOMS)))
    assert np.abs(pos - ATOMS[j]).max() < 0.5 * SPEC.voxel
    assert np.array_equal(z, NUMBERS[j])


def test_touching_atoms_stay_two_where_components_merge_them():
    atoms = np.array([[5.0, 5.0, 5.0], [6.2, 5.0, 5.0]])  # 1.2 Å apart
    numbers = np.array([8, 8], dtype=np.uint8)
    cmap = ClassMap([8])
    logits = _scores(atoms, numbers, cmap, width=0.4, height=40.0)  # wide, sure segments
    merged, _ = decode_atoms(logits.argmax(axis=0), SPEC, classes=cmap)
    assert len(merged) == 1  # one connected component
    pos, z = decode_class_scores(logits, SPEC, cmap)
    assert len(pos) == 2 and list(z) == [8, 8]
    assert np.abs(np.sort(pos[:, 0]) - atoms[:, 0]).max() < 0.2


def test_class_scores_plateaus_threshold_and_errors():
    cmap = ClassMap([26])
    logits = np.zeros((2, *SPEC.shape))
    logits[0] = 8.0
    logits[1, 10:12, 10:12, 10:12] = 30.0  # a flat 2x2x2 plateau: one atom, at its centre
    pos, z = decode_class_scores(logits, SPEC, cmap)
    assert len(pos) == 1 and z[0] == 26
    np.testing.assert_allclose(pos[0], 11.0 * SPEC.voxel, atol=0.05)
    assert len(decode_class_scores(logits, SPEC, cmap, threshold=25.0)[0]) == 0
    with pytest.raises(ValueError, match="logits of shape"):
        decode_class_scores(logits[:, :10], SPEC, cmap)
    with pytest.raises(ValueError, match="odd"):
        decode_class_scores(logits, SPEC, cmap, window=4)


def test_peaks_at_a_low_threshold_hold_those_of_every_higher_one():
    """Random smooth scores with many peaks of all heights: filtering the lowest threshold's
    peaks by their log-odds gives exactly what decoding at the higher threshold gives."""
    from scipy import ndimage

    cmap = ClassMap([8, 26])
    rng = np.random.default_rng(7)
    logits = ndimage.gaussian_filter(rng.normal(size=(3, *SPEC.shape)), (0, 1.5, 1.5, 1.5)) * 30
    pos, z, log_odds = class_score_peaks(logits, SPEC, cmap, threshold=-3.0)
    assert len(pos) > 20 and np.all(np.diff(log_odds) <= 0)  # by decreasing log-odds
    for threshold in np.percentile(log_odds, [20, 50, 80]):
        keep = log_odds > threshold
        assert 0 < keep.sum() < len(pos)
        direct_pos, direct_z = decode_class_scores(logits, SPEC, cmap, threshold=threshold)
        np.testing.assert_array_equal(pos[keep], direct_pos)
        np.testing.assert_array_equal(z[keep], direct_z)
