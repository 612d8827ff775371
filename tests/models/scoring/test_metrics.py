"""The paper's scorers on hand-made cases with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crystalgrid.models.scoring.metrics import (
    PERCENTILES,
    Scorer,
    score_samples,
    to_markdown,
)

TRUE = np.array([[1.0, 1.0, 1.0], [5.0, 5.0, 5.0], [8.0, 2.0, 6.0], [3.0, 7.0, 2.0]])
Z = np.array([11, 26, 8, 29])


def test_shift_of_0_2_angstrom_gives_0_2_everywhere():
    pred = TRUE + np.array([0.2, 0.0, 0.0])
    r = score_samples([(pred, Z, TRUE, Z), (pred[:2], Z[:2], TRUE[:2], Z[:2])])
    for key in ("pred_to_true", "true_to_pred"):
        assert list(r[key]) == [str(p) for p in PERCENTILES]
        assert all(v == pytest.approx(0.2) for v in r[key].values())
    assert r["true_within_radius"] == 1.0
    assert r["count_exact"] == 1.0 and r["count_within"] == 1.0
    assert r["species_exact"] == 1.0 and r["same_group"] == 1.0
    assert r["dz_histogram"] == {"0": 1.0, "1": 0.0, "2": 0.0, ">=3": 0.0}
    assert r["n_samples"] == 2 and r["n_true_atoms"] == 6 and r["n_matched"] == 6


def test_a_shift_beyond_the_radius_matches_nothing():
    r = score_samples([(TRUE + np.array([0.0, 0.6, 0.0]), Z, TRUE, Z)])
    assert r["true_within_radius"] == 0.0
    assert r["n_matched"] == 0 and r["species_exact"] is None and r["dz_histogram"] is None
    assert r["pred_to_true"]["50"] == pytest.approx(0.6)


def test_one_missing_atom_changes_the_count_scores():
    scorer = Scorer()
    scorer.add(TRUE[:3], Z[:3], true_positions=TRUE, true_numbers=Z)  # one atom missed
    scorer.add(TRUE, Z, true_positions=TRUE, true_numbers=Z)  # perfect
    r = scorer.result()
    assert r["count_exact"] == 0.5
    assert r["count_within"] == 1.0
    assert r["true_within_radius"] == pytest.approx(7 / 8)
    # the missed atom's nearest prediction is >= 3 Å away: the 100th percentile shows it
    assert r["true_to_pred"]["100"] > 3.0
    assert r["pred_to_true"]["100"] == 0.0
    three_missing = score_samples([(TRUE[:1], Z[:1], TRUE, Z)])
    assert three_missing["count_within"] == 0.0


def test_species_off_by_one_and_group_cases():
    # Na (11) -> Mg (12): |dZ| = 1, different groups; Fe -> Fe exact;
    # O (8) -> S (16): |dZ| = 8, same group 16; Cu (29) -> Zn (30): |dZ| = 1, groups 11/12.
    pred_z = np.array([12, 26, 16, 30])
    r = score_samples([(TRUE, pred_z, TRUE, Z)])
    assert r["species_exact"] == 0.25
    assert r["dz_histogram"] == {"0": 0.25, "1": 0.5, "2": 0.0, ">=3": 0.25}
    assert r["same_group"] == 0.5  # Fe/Fe and O/S
    # K (19) for Na (11): same group 1, |dZ| = 8
    r2 = score_samples([(TRUE[:1], [19], TRUE[:1], [11])])
    assert r2["same_group"] == 1.0 and r2["dz_histogram"][">=3"] == 1.0


def test_matched_species_use_the_nearest_prediction():
    pred = np.array([[1.1, 1.0, 1.0], [1.4, 1.0, 1.0]])  # two candidates for one true atom
    r = score_samples([(pred, [6, 11], TRUE[:1], [11])])
    assert r["species_exact"] == 0.0  # nearest (0.1 Å) is C, not the Na at 0.4 Å
    assert r["count_exact"] == 0.0 and r["count_within"] == 1.0


def test_empty_predictions_and_targets_never_give_nan():
    scorer = Scorer()
    scorer.add(np.zeros((0, 3)), [], true_positions=TRUE, true_numbers=Z)  # nothing predicted
    scorer.add(TRUE[:2], Z[:2], true_positions=np.zeros((0, 3)), true_numbers=[])  # nothing there
    scorer.add(
        np.zeros((0, 3)), [], true_positions=np.zeros((0, 3)), true_numbers=[]
    )  # both empty: count is exact
    r = scorer.result()
    assert r["true_without_pred"] == 4 and r["pred_without_true"] == 2
    assert r["pred_to_true"] is None and r["true_to_pred"] is None
    assert r["true_within_radius"] == 0.0
    assert r["count_exact"] == pytest.approx(1 / 3)
    assert r["species_exact"] is None and r["voxel_mse"] is None
    text = json.dumps(r, allow_nan=False)  # raises on NaN
    assert json.loads(text)["pred_to_true"] is None
    assert "n/a" in to_markdown(r)
    assert Scorer().result()["count_exact"] is None  # nothing scored at all


def test_voxel_mse_percentiles_and_markdown():
    scorer = Scorer()
    for mse in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0):
        scorer.add(TRUE, Z, true_positions=TRUE, true_numbers=Z, voxel_mse=mse * 1e-3)
    r = scorer.result()
    assert r["voxel_mse"]["50"] == pytest.approx(5e-3)
    assert r["voxel_mse"]["100"] == pytest.approx(1e-2)
    assert r["voxel_mse_mean"] == pytest.approx(5e-3)
    md = to_markdown(r, title="test split")
    assert md.startswith("## test split")
    assert "| true atoms within 0.5 Å of a prediction | 100.0% | 99.0% |" in md
    assert "paper (single cells): prediction → true (Å)" in md
    assert "| score | this model | reference |" in to_markdown(r, reference={"count_exact": 0.5})


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        Scorer().add(TRUE, Z[:2], true_positions=TRUE, true_numbers=Z)


def test_interior_scores_leave_out_the_atoms_near_a_face():
    """A crop's extra atoms sit at its faces (periodic images its labels leave out): the
    interior scores count only atoms at least the margin from every face."""
    true_pos = np.array([[5.0, 5.0, 5.0], [2.0, 3.0, 4.0], [0.3, 5.0, 5.0]])
    true_z = np.array([8, 26, 8])
    # Two atoms found, one missed at a face, and one extra just inside another face.
    pred_pos = np.array([[5.1, 5.0, 5.0], [2.0, 3.0, 4.0], [5.0, 9.8, 5.0]])
    pred_z = np.array([8, 25, 8])
    scorer = Scorer(interior=(10.0, 0.6))
    scorer.add(pred_pos, pred_z, true_positions=true_pos, true_numbers=true_z)
    result = scorer.result()
    assert result["true_within_radius"] == pytest.approx(2 / 3)
    assert result["pred_within_radius"] == pytest.approx(2 / 3)
    inner = result["interior"]
    assert inner == {
        "margin": 0.6,
        "n_true_atoms": 2,
        "n_pred_atoms": 2,
        "true_within_radius": 1.0,
        "pred_within_radius": 1.0,
        "species_exact": 0.5,
    }
    md = to_markdown(result)
    assert "| true atoms ≥ 0.6 Å from every face: within 0.5 Å | 100.0% |" in md
    assert Scorer().result()["interior"] is None
    assert "from every face" not in to_markdown(score_samples([]))
