"""Nearest-neighbour spacing and structural validity of generated samples, on hand-made atom
sets (numpy only)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from crystalgrid.models.scoring.distances import min_distance, nearest_neighbour_distances
from crystalgrid.models.scoring.generated import (
    SPACING_EDGES,
    spacing_distribution,
    structural_validity,
)

SETS = [
    np.array([[0.0, 0, 0], [1, 0, 0], [0, 3, 0]]),  # spacings 1, 1, 3
    np.array([[5.0, 5, 5], [5, 5, 6.5]]),  # 1.5, 1.5
    np.array([[2.0, 2, 2]]),  # one atom: no spacing
    np.zeros((0, 3)),  # empty
]


def test_nearest_neighbour_distances_by_hand():
    assert nearest_neighbour_distances(SETS[0]).tolist() == [1.0, 1.0, 3.0]
    assert nearest_neighbour_distances(SETS[1]).tolist() == [1.5, 1.5]
    assert nearest_neighbour_distances(SETS[2]).size == 0
    assert nearest_neighbour_distances(SETS[3]).size == 0
    assert min_distance(SETS[0]) == 1.0 and min_distance(SETS[2]) is None


def test_nearest_neighbour_distances_match_brute_force():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 10, size=(40, 3))
    brute = [min(np.linalg.norm(p[i] - p[j]) for j in range(40) if j != i) for i in range(40)]
    np.testing.assert_allclose(nearest_neighbour_distances(p), brute, rtol=1e-12)


def test_spacing_histogram_by_hand():
    h = spacing_distribution(SETS, edges=(0.0, 0.5, 1.0, 2.0, 2.5))
    assert h["counts"] == [0, 0, 4, 0]  # 1, 1, 1.5, 1.5 in [1, 2)
    assert h["overflow"] == 1  # 3 Å is past the last edge
    assert h["n_spacings"] == 5 and h["n_samples"] == 4 and h["n_samples_with_pairs"] == 2
    assert h["fraction"] == [0.0, 0.0, 0.8, 0.0] and h["overflow_fraction"] == 0.2
    assert h["mean"] == pytest.approx(1.6)
    assert h["percentiles"]["0"] == 1.0 and h["percentiles"]["100"] == 3.0
    assert h["percentiles"]["50"] == 1.5
    default = spacing_distribution(SETS)
    assert default["edges"] == list(SPACING_EDGES) and len(default["counts"]) == 60
    assert default["counts"][10] == 2 and default["counts"][15] == 2  # 1.0 Å and 1.5 Å bins
    assert default["counts"][30] == 1 and default["overflow"] == 0
    json.dumps(default, allow_nan=False)


def test_spacing_of_nothing_is_empty_not_nan():
    h = spacing_distribution([np.zeros((0, 3)), np.ones((1, 3))])
    assert h["n_spacings"] == 0 and h["mean"] is None and h["percentiles"] is None
    assert sum(h["counts"]) == 0
    with pytest.raises(ValueError, match="ascending"):
        spacing_distribution(SETS, edges=(1.0, 0.5))


def test_validity_fraction_by_hand():
    sets = [
        np.array([[0.0, 0, 0], [0.4, 0, 0]]),  # too close
        np.array([[0.0, 0, 0], [0.5, 0, 0]]),  # exactly 0.5 Å: not closer, valid
        np.array([[1.0, 1, 1]]),  # one atom: valid
        np.zeros((0, 3)),  # nothing: invalid
        np.array([[0.0, 0, 0], [2, 0, 0], [0, 2, 0]]),  # valid
    ]
    v = structural_validity(sets)
    assert v["valid"] == [False, True, True, False, True]
    assert v["fraction"] == pytest.approx(3 / 5)
    assert (v["n_valid"], v["n_empty"], v["n_too_close"]) == (3, 1, 1)
    assert v["min_distance"][0] == pytest.approx(0.4) and v["min_distance"][2] is None
    assert "volume test does not apply" in v["definition"]
    # with volumes (a lattice): 0.05 Å^3 fails
    w = structural_validity(sets[1:3], volumes=[0.05, 10.0])
    assert w["valid"] == [False, True] and w["n_small_volume"] == 1
    assert structural_validity([])["fraction"] is None


def test_atom_counts_and_charge_balance():
    from crystalgrid.models.scoring.generated import atom_counts, charge_balance

    counts = atom_counts([np.zeros((2, 3)), np.zeros((4, 3)), np.zeros((0, 3))])
    assert counts["n_samples"] == 3 and counts["mean"] == 2.0
    assert counts["percentiles"]["50"] == 2.0
    numbers = [
        np.array([11, 17]),  # NaCl: balanced
        np.array([26, 26, 8, 8, 8]),  # Fe2O3: balanced
        np.array([11, 11, 2]),  # Na2He: no neutral assignment, and no warning about He
        np.array([26]),  # an element
        np.array([], dtype=np.uint8),  # nothing
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balance = charge_balance(numbers)
    assert (balance["n_samples"], balance["n_balanced"]) == (5, 3)
    assert balance["fraction"] == pytest.approx(0.6)
    many = charge_balance([np.arange(1, 21)])  # 20 elements: not searched, and no hang
    assert (many["n_balanced"], many["n_not_searched"]) == (0, 1)


def test_uniqueness_and_novelty_by_structure_matcher():
    from crystalgrid.models.scoring.generated import uniqueness_and_novelty

    pair = np.array([[2.0, 2.0, 2.0], [4.5, 2.0, 2.0]])
    shifted = pair + 1.0  # the same two atoms moved: the same structure
    other = pair  # the same places, another compound
    draws = (
        [pair, shifted, other, np.zeros((0, 3))],
        [np.array([11, 17]), np.array([11, 17]), np.array([11, 9]), np.zeros(0)],
    )
    training = ([pair], [np.array([11, 17])])
    result = uniqueness_and_novelty(*draws, training, side=10.0)
    assert result["n_samples"] == 3  # the empty draw is left out
    assert result["n_distinct"] == 2 and result["n_novel"] == 1
    assert result["uniqueness"] == pytest.approx(2 / 3)
