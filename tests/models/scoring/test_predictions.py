"""Scoring another model's predictions: the file format, the truth scores 100%, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import crystalgrid
from crystalgrid.cli import main
from crystalgrid.errors import BadInputError
from crystalgrid.models.scoring.predictions import (
    load_predictions,
    score_predictions,
    write_truth_predictions,
)


@pytest.fixture(scope="module")
def test_view(store):
    return crystalgrid.open_dataset(store).split("test")


def test_the_truth_scores_100_percent(test_view, tmp_path):
    path = write_truth_predictions(tmp_path / "truth.npz", test_view)
    result = score_predictions(path, test_view)
    assert result["n_samples"] == len(test_view)
    for key in ("true_within_radius", "count_exact", "count_within", "species_exact"):
        assert result[key] == 1.0, key
    assert result["pred_to_true"]["100"] == 0.0
    matcher = result["structure_matcher"]
    assert matcher["complete_cells"]["match_rate"] == 1.0
    # Cells sticking out of the box miss atoms in the truth itself, so they cannot match.
    assert matcher["n_samples"] == len(test_view)


def test_species_grids_score_as_the_decoding_ceiling(test_view, tmp_path):
    from crystalgrid.models.scoring.decoders import score_species_grids

    batch = test_view[0 : len(test_view)]
    path = tmp_path / "species.npz"
    np.savez(path, index=batch["index"], species=batch["species"], density=batch["density"])
    result = score_predictions(path, test_view, matching=False)
    ceiling = score_species_grids(test_view)
    assert result["true_within_radius"] == ceiling["true_within_radius"]
    assert result["count_exact"] == ceiling["count_exact"]
    assert result["voxel_mse"]["100"] == 0.0  # the true density was given back
    assert result["predictions"]["kind"] == "species grids"


def test_density_alone_is_decoded_by_the_peak_fit(test_view, tmp_path):
    batch = test_view[0:4]
    path = tmp_path / "density.npz"
    np.savez(path, index=batch["index"], density=batch["density"])
    result = score_predictions(path, test_view, limit=4, matching=False)
    assert result["predictions"]["kind"] == "density grids (peak fit)"
    assert result["n_samples"] == 4 and result["true_within_radius"] > 0.9


def test_the_cli_scores_a_file(store, test_view, tmp_path):
    path = write_truth_predictions(tmp_path / "truth.npz", test_view)
    result = CliRunner().invoke(
        main, ["evaluate", "--predictions", str(path), "--data", str(store), "--markdown"]
    )
    assert result.exit_code == 0, result.output
    assert "| true atoms within 0.5 Å of a prediction | 100.0% |" in result.output


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"species": np.zeros((1, 30, 30, 30))}, "no 'index'"),
        ({"index": np.array([0, 0]), "density": np.zeros((2, 30, 30, 30))}, "more than once"),
        ({"index": np.array([0]), "density": np.zeros((1, 20, 20, 20))}, "expected"),
        ({"index": np.array([0])}, "neither grids"),
        (
            {
                "index": np.array([0, 1]),
                "positions": np.zeros((3, 3)),
                "numbers": np.ones(3),
                "counts": np.array([1, 1]),
            },
            "counts",
        ),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(BadInputError, match=message):
        load_predictions(path, 30)


def test_a_missing_sample_is_an_error(test_view, tmp_path):
    batch = test_view[0:2]
    path = tmp_path / "two.npz"
    np.savez(path, index=batch["index"], species=batch["species"])
    with pytest.raises(BadInputError, match="has no prediction"):
        score_predictions(path, test_view)
    assert score_predictions(path, test_view, limit=2, matching=False)["n_samples"] == 2


def test_cli_errors(store, tmp_path):
    runner = CliRunner()
    both = runner.invoke(main, ["evaluate", "--data", str(store)])
    assert both.exit_code == 2 and "either a CHECKPOINT or --predictions" in both.stderr
    missing = runner.invoke(
        main, ["evaluate", "--predictions", str(tmp_path / "no.npz"), "--data", str(store)]
    )
    assert missing.exit_code == 2 and "predictions file not found" in missing.stderr
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a zip")
    bad = runner.invoke(main, ["evaluate", "--predictions", str(garbage), "--data", str(store)])
    assert bad.exit_code == 2 and "not a readable .npz" in bad.stderr
