"""The two representations: transforms, periodic images, ground truth, reproducibility."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crystalgrid.errors import RejectedStructure
from crystalgrid.grids import density_grid, density_grid_reference
from crystalgrid.grids.placement import (
    Crystal,
    crystal_rng,
    place_repeated,
    place_single,
    placements,
    random_rotation,
)
from crystalgrid.spec import GridSpec

SPEC = GridSpec()


def _apply(t, points):
    return points @ t[:3, :3].T + t[:3, 3]


def _supercell_box_coords(structure: Structure, transform: np.ndarray):
    """Atoms of an explicit pymatgen supercell around the box, in box Å.

    The supercell reaches >= 10 Å + 2 x 8 Å beyond the box in every direction; atoms farther
    than 8 Å from the box (Gaussian factor < 1e-14) are dropped to keep the float64
    reference cheap.
    """
    heights = structure.volume / np.linalg.norm(
        np.cross(structure.lattice.matrix[[1, 2, 0]], structure.lattice.matrix[[2, 0, 1]]), axis=1
    )
    reps = int(2 * np.ceil((SPEC.side + 16.0) / heights.min()) + 3)
    supercell = structure.copy()
    supercell.make_supercell([reps, reps, reps])
    shift = -(reps // 2) * structure.lattice.matrix.sum(axis=0)
    # Centre the supercell on the box: move it by whole cells to the box's origin.
    centre_frac = np.linalg.solve(
        structure.lattice.matrix.T, np.linalg.inv(transform)[:3] @ [5.0, 5.0, 5.0, 1.0]
    )
    shift = shift + np.round(centre_frac) @ structure.lattice.matrix
    positions = _apply(transform, supercell.cart_coords + shift)
    numbers = np.array([s.specie.Z for s in supercell])
    gap = np.maximum(np.maximum(-positions, positions - SPEC.side), 0)
    near = np.sqrt((gap**2).sum(axis=1)) <= 8.0
    return positions[near], numbers[near]


@pytest.mark.parametrize("sample", [0, 1, 2])
def test_repeated_crop_equals_explicit_supercell(triclinic, sample):
    crystal = Crystal.from_structure(triclinic)
    placement = placements(crystal, "tri", "repeated", SPEC, n_samples=3, seed=5)[sample]
    positions, numbers = _supercell_box_coords(triclinic, placement.transform)
    exact = density_grid_reference(positions, numbers, SPEC)
    fast = density_grid(placement.positions, placement.numbers, SPEC)
    assert np.abs(fast - exact).max() <= SPEC.tolerance * exact.max()
    # The ground truth is exactly the supercell atoms inside the box.
    inside = np.all((positions >= 0) & (positions < SPEC.side), axis=1)
    got = sorted(map(tuple, np.round(placement.atom_positions, 6)))
    want = sorted(map(tuple, np.round(positions[inside], 6)))
    assert got == want


def test_repeated_sample_zero_puts_the_origin_at_the_corner(nacl):
    placement = place_repeated(Crystal.from_structure(nacl), SPEC)
    np.testing.assert_allclose(placement.transform, np.eye(4))
    # Rock salt, a = 5.64 Å: atoms every 2.82 Å from the corner, 4 per axis inside 10 Å.
    assert len(placement.atom_numbers) == 64
    assert placement.atom_positions.min() == pytest.approx(0.0, abs=1e-9)
    assert sorted(set(placement.atom_numbers.tolist())) == [11, 17]


def test_repeated_rotation_option(triclinic):
    crystal = Crystal.from_structure(triclinic)
    plain = placements(crystal, "x", "repeated", SPEC, n_samples=2, seed=1)
    turned = placements(crystal, "x", "repeated", SPEC, n_samples=2, seed=1, rotate=True)
    np.testing.assert_allclose(plain[0].transform[:3, :3], np.eye(3))
    assert not np.allclose(turned[1].transform[:3, :3], np.eye(3))
    # Same offsets with or without rotation: the stream is used the same way.
    np.testing.assert_allclose(
        np.linalg.inv(turned[1].transform[:3, :3]) @ turned[1].transform[:3, 3],
        plain[1].transform[:3, 3],
    )


def test_single_centres_the_cell_and_counts_lost_atoms(triclinic):
    crystal = Crystal.from_structure(triclinic)
    placement = place_single(crystal, SPEC, random_rotation(np.random.default_rng(0)))
    cell_centre = np.full(3, 0.5) @ crystal.lattice
    np.testing.assert_allclose(_apply(placement.transform, cell_centre), [5.0, 5.0, 5.0])
    assert len(placement.positions) == len(crystal)  # no periodic images
    assert placement.n_outside == len(crystal) - placement.inside.sum()

    big = Structure(
        Lattice.cubic(9.9),
        ["Cs"] * 8,
        [[x, y, z] for x in (0, 0.95) for y in (0, 0.95) for z in (0, 0.95)],
    )
    corners = place_single(
        Crystal.from_structure(big), SPEC, random_rotation(np.random.default_rng(4))
    )
    assert corners.n_outside > 0  # a rotated 9.9 Å cube's corners leave the 10 Å box
    assert len(corners.atom_numbers) == 8 - corners.n_outside


def test_single_wraps_sites_into_the_cell():
    s = Structure(Lattice.cubic(4.0), ["Fe"], [[1.25, -0.5, 0.5]])
    placement = place_single(Crystal.from_structure(s), SPEC)
    np.testing.assert_allclose(placement.positions[0], [4.0, 5.0, 5.0])


def test_rotations_are_haar_distributed():
    rng = np.random.default_rng(0)
    rotations = np.array([random_rotation(rng) for _ in range(4000)])
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        rotations @ rotations.transpose(0, 2, 1),
        np.broadcast_to(np.eye(3), rotations.shape),
        atol=1e-12,
    )
    # Under the Haar measure E[R] = 0 and E[R_ij^2] = 1/3; the rotation angle has density
    # (1 - cos t) / pi, so E[cos t] = -1/2 (trace = 1 + 2 cos t).
    assert np.abs(rotations.mean(axis=0)).max() < 0.03
    np.testing.assert_allclose((rotations**2).mean(axis=0), 1 / 3, atol=0.03)
    cos_t = (np.trace(rotations, axis1=1, axis2=2) - 1) / 2
    assert cos_t.mean() == pytest.approx(-0.5, abs=0.03)


def test_stream_depends_on_seed_and_id_only():
    a = crystal_rng(7, "mp-149").random(4)
    np.testing.assert_array_equal(a, crystal_rng(7, "mp-149").random(4))
    assert not np.allclose(a, crystal_rng(8, "mp-149").random(4))
    assert not np.allclose(a, crystal_rng(7, "mp-150").random(4))


def test_disordered_and_degenerate_structures_are_refused():
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(RejectedStructure) as info:
        Crystal.from_structure(disordered)
    assert info.value.reason == "disordered"
    flat = np.array([[4.0, 0, 0], [0, 4.0, 0], [4.0, 4.0, 0]])
    with pytest.raises(RejectedStructure) as info:
        Crystal.from_arrays(flat, [[0, 0, 0]], [8])
    assert info.value.reason == "zero_volume"
    with pytest.raises(ValueError, match="representation"):
        placements(
            Crystal.from_structure(Structure(Lattice.cubic(3), ["H"], [[0, 0, 0]])),
            "h",
            "both",
            SPEC,
        )


def test_real_materials_project_crystals_within_tolerance(shared_data):
    """Max error <= 1e-4 of the maximum on real MP crystals, both representations."""
    with gzip.open(shared_data / "mp_binaries" / "mp_binaries.json.gz") as f:
        records = json.load(f)
    rng = np.random.default_rng(0)
    picked = [records[i] for i in rng.choice(len(records), size=12, replace=False)]
    for record in picked:
        structure = Structure.from_dict(record["structure"])
        crystal = Crystal.from_structure(structure)
        for rep in ("single", "repeated"):
            placement = placements(crystal, record["material_id"], rep, SPEC, n_samples=2, seed=0)[
                1
            ]
            if rep == "repeated":
                positions, numbers = _supercell_box_coords(structure, placement.transform)
            else:
                positions = _apply(placement.transform, np.mod(crystal.frac, 1) @ crystal.lattice)
                numbers = crystal.numbers
            exact = density_grid_reference(positions, numbers, SPEC)
            fast = density_grid(placement.positions, placement.numbers, SPEC)
            assert np.abs(fast - exact).max() <= SPEC.tolerance * exact.max(), record["material_id"]
