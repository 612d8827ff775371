"""Evaluation of a checkpoint and the decoding ceiling on true species grids."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

torch = pytest.importorskip("torch")

from crystalgrid.errors import CrystalgridError  # noqa: E402
from crystalgrid.models.runtime import cpu_capability  # noqa: E402
from crystalgrid.models.scoring.decoders import score_species_grids  # noqa: E402
from crystalgrid.models.scoring.evaluate import evaluate  # noqa: E402
from crystalgrid.models.training.loop import train  # noqa: E402
from crystalgrid.spec import GridSpec  # noqa: E402


def test_decoding_the_true_species_grids_recovers_every_atom(make_view):
    view = make_view(12, seed=3)
    r = score_species_grids(view)
    assert r["n_samples"] == 12
    assert r["true_within_radius"] == 1.0 and r["count_exact"] == 1.0
    assert r["species_exact"] == 1.0 and r["same_group"] == 1.0
    assert r["pred_to_true"]["100"] < GridSpec().voxel / 2
    assert score_species_grids(view, limit=5)["n_samples"] == 5


def test_evaluate_a_checkpoint(make_view, tiny_config, tmp_path):
    view = make_view(8, seed=0)
    last = train(tiny_config.with_overrides(max_steps=2), view, out_dir=tmp_path, quiet=True)
    result = evaluate(
        last, make_view(5, seed=4), batch_size=2, device="cpu", precision="fp32", quiet=True
    )
    assert result["n_samples"] == 5 and result["checkpoint"]["step"] == 2
    # Which weights the scores belong to: the checkpoint file's SHA-256.
    assert result["checkpoint"]["sha256"] == hashlib.sha256(last.read_bytes()).hexdigest()
    assert result["runtime"] == f"cpu ({cpu_capability()}), fp32, eager"
    assert result["voxel_mse_mean"] is not None and math.isfinite(result["voxel_mse_mean"])
    assert result["ceiling"]["true_within_radius"] == 1.0  # atoms well inside the box
    json.loads(json.dumps(result, allow_nan=False))  # JSON-ready, no NaN
    assert "ceiling" not in evaluate(last, view, ceiling=False, limit=1, quiet=True)
    with pytest.raises(CrystalgridError, match="grid spec"):
        evaluate(last, view, spec=GridSpec(side=12.0))


def test_evaluate_on_the_true_densities(make_view, tiny_config, tmp_path):
    """``source="truth"`` skips the VAE: the peak fit then reads the true densities and finds
    every atom, whatever the (barely trained) model; the U-Net's scores are finite."""
    view = make_view(6, seed=2)
    last = train(tiny_config.with_overrides(max_steps=2), view, out_dir=tmp_path, quiet=True)
    fit = evaluate(last, view, source="truth", decoder="peakfit", ceiling=False, quiet=True)
    assert fit["source"] == "truth" and fit["voxel_mse_mean"] is None
    assert fit["true_within_radius"] == 1.0 and fit["species_exact"] == 1.0
    unet = evaluate(last, view, source="truth", ceiling=False, quiet=True)
    assert unet["n_samples"] == 6 and unet["source"] == "truth"
    assert evaluate(last, view, limit=2, ceiling=False, quiet=True)["source"] == "reconstruction"
    with pytest.raises(CrystalgridError, match="source must be one of"):
        evaluate(last, view, source="density")
