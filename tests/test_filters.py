"""Tests for crystalgrid.filters: one hand-made structure per reject reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Composition, DummySpecies, Lattice, Structure

from crystalgrid.errors import RejectedStructure
from crystalgrid.filters import REASONS, FilterConfig, check_structure, describe_rejects


def reason_of(structure: Structure, **kw) -> str:
    with pytest.raises(RejectedStructure) as info:
        check_structure(structure, **kw)
    assert info.value.detail, "every rejection carries a human detail"
    return info.value.reason


def test_valid_structures_pass(nacl, triclinic):
    assert check_structure(nacl) is None
    assert check_structure(triclinic) is None


def test_empty():
    empty = Structure(Lattice.cubic(4.0), [], [])
    assert reason_of(empty) == "empty"


def test_zero_volume_flat_cell():
    flat = Structure(Lattice([[3, 0, 0], [0, 3, 0], [3, 3, 0]]), ["Na"], [[0, 0, 0]])
    assert reason_of(flat) == "zero_volume"


def test_zero_volume_tiny_cell():
    tiny = Structure(Lattice.cubic(0.4), ["H"], [[0, 0, 0]])  # 0.064 Å^3
    assert reason_of(tiny, min_distance=0.0) == "zero_volume"


def test_zero_volume_non_finite_lattice():
    # pymatgen reports volume 1.0 for this matrix; the filter must look at the numbers.
    bad = Structure(Lattice([[1, 0, 0], [0, 1, 0], [0, 0, math.nan]]), ["Na"], [[0, 0, 0]])
    assert reason_of(bad) == "zero_volume"


def test_max_side_rejects_10_5_angstrom_cell():
    big = Structure(Lattice.tetragonal(4.0, 10.5), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert reason_of(big) == "max_side"
    assert check_structure(big, max_side=11.0) is None


def test_max_side_is_exclusive():
    edge = Structure(Lattice.cubic(10.0), ["Na"], [[0, 0, 0]])
    assert reason_of(edge) == "max_side"
    just_below = Structure(Lattice.cubic(9.99), ["Na"], [[0, 0, 0]])
    assert check_structure(just_below) is None


def test_too_many_atoms(nacl):
    assert check_structure(nacl, max_atoms=8) is None
    assert reason_of(nacl, max_atoms=7) == "too_many_atoms"


def test_unknown_element_dummy_species():
    dummy = Structure(Lattice.cubic(4.0), [DummySpecies("X"), "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert reason_of(dummy) == "unknown_element"


def test_oxidation_states_are_real_elements():
    ionic = Structure(Lattice.cubic(4.0), ["Na+", "Cl-"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert check_structure(ionic) is None


def test_disordered_partial_occupancy():
    partial = Structure(Lattice.cubic(4.0), [{"Na": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert reason_of(partial) == "disordered"


def test_disordered_mixed_site():
    mixed = Structure(
        Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    assert reason_of(mixed) == "disordered"


def test_occupancy_above_one_is_never_accepted():
    # pymatgen refuses such a site when the structure is built, so parse_record rejects the
    # payload; the filter's own "occupancy above 1" branch guards structures built otherwise.
    from crystalgrid.sources.base import RawRecord, parse_record

    data = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).as_dict()
    data["sites"][0]["species"][0]["occu"] = 1.2
    with pytest.raises(RejectedStructure) as info:
        parse_record(RawRecord("over", "dict", data))
    assert info.value.reason == "unparsable"
    assert "more than 1" in info.value.detail

    over = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    over[0]._species = Composition({"Na": 1.2})  # bypass pymatgen's check on purpose
    with pytest.raises(RejectedStructure) as info:
        check_structure(over)
    assert info.value.reason == "disordered"
    assert "above 1" in info.value.detail


def test_too_close_across_periodic_boundary():
    # 0.3 Å apart through the x face of a 5 Å cell, 4.7 Å apart inside it.
    pair = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0.02, 0.5, 0.5], [0.96, 0.5, 0.5]])
    with pytest.raises(RejectedStructure) as info:
        check_structure(pair)
    assert info.value.reason == "too_close"
    assert "0.300" in info.value.detail
    assert check_structure(pair, min_distance=0.25) is None


def test_too_close_across_skewed_boundary():
    # A sheared cell: the second atom is 0.3 Å (Cartesian -y) from the first, through the
    # b face, while the two copies inside the cell are ~4.7 Å apart.
    lattice = Lattice([[5.0, 0, 0], [4.6, 1.2, 0], [0, 0, 5.0]])
    first = np.array([0.5, 0.1, 0.5])
    second = (first + lattice.get_fractional_coords([0.0, -0.3, 0.0])) % 1.0
    in_cell = np.linalg.norm(lattice.get_cartesian_coords(second - first))
    assert in_cell > 4.0
    pair = Structure(lattice, ["Na", "Cl"], [first, second])
    with pytest.raises(RejectedStructure) as info:
        check_structure(pair)
    assert info.value.reason == "too_close"
    assert "0.300" in info.value.detail


def test_too_close_atom_and_its_own_image():
    thin = Structure(Lattice.tetragonal(0.45, 5.0), ["H"], [[0, 0, 0]])
    assert reason_of(thin) == "too_close"


def test_distance_check_accepts_a_few_hundred_atoms_far_enough_apart():
    rng = np.random.default_rng(0)
    # 300 atoms on a jittered grid: no pair closer than ~0.9 Å, so every pair is computed.
    grid = np.stack(np.meshgrid(*[np.arange(7)] * 3, indexing="ij"), -1).reshape(-1, 3)[:300]
    frac = (grid + 0.5 + rng.uniform(-0.1, 0.1, grid.shape)) / 7.0
    crowded = Structure(Lattice.cubic(9.0), ["C"] * 300, frac)
    check_structure(crowded)  # no RejectedStructure: every pair is above 0.5 Å
    jammed = Structure(Lattice.cubic(9.0), ["C"] * 300, np.vstack([frac[:-1], frac[:1] + 1e-3]))
    assert reason_of(jammed) == "too_close"


def test_cheap_checks_run_first():
    # Disordered, too close and too big at once: the cheap max_side check decides.
    messy = Structure(Lattice.cubic(12.0), [{"Na": 0.5}, "Cl"], [[0, 0, 0], [0.01, 0, 0]])
    assert reason_of(messy) == "max_side"
    assert reason_of(messy, max_side=20.0) == "disordered"


def test_reasons_constant_lists_every_reason():
    assert set(REASONS) == {
        "empty",
        "zero_volume",
        "max_side",
        "too_many_atoms",
        "unknown_element",
        "disordered",
        "too_close",
    }


def test_filter_config_round_trip(nacl):
    config = FilterConfig(max_side=12.0, min_distance=0.7, max_atoms=50)
    assert config.to_dict() == {"max_side": 12.0, "min_distance": 0.7, "max_atoms": 50}
    assert FilterConfig.from_dict(config.to_dict()) == config
    assert FilterConfig() == FilterConfig(max_side=10.0, min_distance=0.5, max_atoms=None)
    assert FilterConfig(max_atoms=8).check(nacl) is None
    with pytest.raises(RejectedStructure):
        FilterConfig(max_atoms=7).check(nacl)
    with pytest.raises(ValueError, match="unknown"):
        FilterConfig.from_dict({"max_side": 10.0, "colour": "red"})
    with pytest.raises(ValueError, match="max_side"):
        FilterConfig(max_side=-1.0)
    with pytest.raises(ValueError, match="max_atoms"):
        FilterConfig(max_atoms=0)


def test_filter_config_is_frozen():
    config = FilterConfig()
    with pytest.raises(AttributeError):
        config.max_side = 5.0  # type: ignore[misc]


def test_describe_rejects_counts_sorted():
    counts = describe_rejects(["too_close", "max_side", "too_close", "disordered"])
    assert counts == {"disordered": 1, "max_side": 1, "too_close": 2}
    assert list(counts) == ["disordered", "max_side", "too_close"]
    assert describe_rejects([]) == {}
    assert describe_rejects(iter(["a"])) == {"a": 1}
