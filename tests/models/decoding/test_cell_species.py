"""The per-cell species reader: atoms of one element share a Z, read together from their
amplitudes, a segmenter's probabilities and a prior over elements."""

from __future__ import annotations

import numpy as np
import pytest

from crystalgrid.errors import ConfigError
from crystalgrid.models.decoding.cell_species import MAX_Z, CellSpecies, element_counts
from crystalgrid.models.decoding.segmentation import species_probabilities
from crystalgrid.models.nets.classes import ClassMap
from crystalgrid.spec import GridSpec


def _noisy_cell(seed: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Six oxygens and three irons, each atom's electrons off by N(0, sigma)."""
    rng = np.random.default_rng(seed)
    numbers = np.array([8] * 6 + [26] * 3)
    return numbers + rng.normal(0, sigma, len(numbers)), numbers


def test_atoms_read_together_beat_atoms_read_alone():
    right_cell = right_alone = 0
    reader = CellSpecies(sigma=1.5)
    for seed in range(40):
        electrons, numbers = _noisy_cell(seed, 1.5)
        read = reader.assign(electrons)
        # Read as at most two elements, the oxygens share one Z and the irons another.
        two = CellSpecies(sigma=1.5, max_elements=2).assign(electrons)
        assert len(set(two[:6])) == 1 and len(set(two[6:])) == 1
        right_cell += int((read == numbers).sum())
        right_alone += int((np.rint(electrons) == numbers).sum())
    # One atom at a time rounds ~26% right at this spread; six and three atoms averaged do far
    # about twice as often.
    assert right_cell > 2 * right_alone
    assert right_cell / (40 * 9) > 0.45


def test_the_offset_restores_electrons_a_reconstruction_lost():
    electrons = np.array([6.4, 6.6, 6.5, 24.5, 24.4])
    assert CellSpecies(offset=1.5).assign(electrons).tolist() == [8, 8, 8, 26, 26]
    assert CellSpecies().assign(electrons).tolist() != [8, 8, 8, 26, 26]


def test_the_prior_settles_an_amplitude_between_two_elements():
    electrons = np.full(2, 25.5)  # as far from manganese as from iron
    counts = np.zeros(MAX_Z, dtype=np.int64)
    counts[25] = 100  # iron: held by many training cells
    counts[24] = 1
    assert CellSpecies(counts=tuple(counts)).assign(electrons).tolist() == [26, 26]
    counts[[24, 25]] = (100, 1)
    assert CellSpecies(counts=tuple(counts)).assign(electrons).tolist() == [25, 25]


def test_the_segmenter_s_probabilities_weigh_in_only_with_a_weight():
    electrons = np.array([25.5])
    p = np.zeros((1, MAX_Z))
    p[0, 24] = 0.9  # manganese
    p[0, 25] = 0.1
    assert CellSpecies(segmenter_weight=1.0).assign(electrons, p).tolist() == [25]
    assert CellSpecies(segmenter_weight=0.0, offset=0.1).assign(electrons, p).tolist() == [26]
    with pytest.raises(ValueError, match="probabilities of shape"):
        CellSpecies(segmenter_weight=1.0).assign(electrons, np.ones((2, MAX_Z)))


def test_at_most_max_elements_are_read():
    electrons = np.array([8.0, 8.1, 26.0, 26.2, 50.0])
    assert len(set(CellSpecies(sigma=0.5).assign(electrons).tolist())) == 3
    assert len(set(CellSpecies(sigma=0.5, max_elements=2).assign(electrons).tolist())) == 2
    assert len(set(CellSpecies(sigma=0.5, max_elements=1).assign(electrons).tolist())) == 1


def test_no_atom_reads_nothing():
    read = CellSpecies().assign(np.zeros(0))
    assert read.shape == (0,) and read.dtype == np.uint8


def test_settings_round_trip_and_bad_settings_are_refused():
    counts = element_counts([np.array([8, 8, 26]), np.array([8, 0, 0])])
    reader = CellSpecies(offset=1.5, sigma=2.5, segmenter_weight=0.25, counts=tuple(counts))
    assert CellSpecies.from_dict(reader.to_dict()) == reader
    with pytest.raises(ConfigError, match="sigma must be positive"):
        CellSpecies(sigma=0)
    with pytest.raises(ConfigError, match="118 entries"):
        CellSpecies(counts=(1, 2, 3))
    with pytest.raises(ConfigError, match="max_elements"):
        CellSpecies(max_elements=0)
    with pytest.raises(ConfigError, match="unknown settings"):
        CellSpecies.from_dict({"sigma": 2.0, "width": 1.0})


def test_element_counts_count_cells_not_atoms():
    counts = element_counts([np.array([8, 8, 26]), np.array([8, 0, 0]), np.array([119])])
    assert counts.shape == (MAX_Z,) and counts.sum() == 3
    assert (counts[7], counts[25]) == (2, 1)


def test_species_probabilities_follow_the_segmenter_around_each_atom():
    spec = GridSpec(bins=10, side=5.0)
    classes = ClassMap([8, 26])
    logits = np.full((3, *spec.shape), -5.0)
    logits[0] = 0.0
    logits[2, 3:6, 3:6, 3:6] = 6.0  # iron around voxel (4, 4, 4)
    logits[1, 8, 8, 8] = 6.0  # oxygen at voxel (8, 8, 8)
    positions = (np.array([[4, 4, 4], [8, 8, 8], [1, 1, 1]]) + 0.5) * spec.voxel
    p = species_probabilities(logits, positions, spec, classes)
    assert p.shape == (3, MAX_Z)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0].argmax() == 25 and p[0, 25] > 0.99
    assert p[1].argmax() == 7
    assert p[2, 7] == pytest.approx(0.5)  # no evidence: the two classes alike
