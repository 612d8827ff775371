"""Latent interpolation (`crystalgrid interpolate`): sample names, the line's ends and steps,
and the verb's files on a real demo store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import crystalgrid
from crystalgrid.cli import main
from crystalgrid.errors import BadInputError

torch = pytest.importorskip("torch")

from crystalgrid.models.checkpoint import load_checkpoint  # noqa: E402
from crystalgrid.models.latent.interpolate import interpolate, resolve_sample  # noqa: E402
from crystalgrid.models.plots import INTERPOLATION_COLUMN  # noqa: E402


def test_resolve_sample_by_index_and_material_id(store):
    ds = crystalgrid.open_dataset(store)
    test = ds.split("test")
    first = test[0]
    assert resolve_sample(ds, first["material_id"]) == first["index"]
    assert resolve_sample(ds, str(first["index"])) == first["index"] == resolve_sample(ds, 233)
    with pytest.raises(BadInputError, match="no sample with material id 'nope'"):
        resolve_sample(ds, "nope")
    with pytest.raises(BadInputError, match="out of range"):
        resolve_sample(ds, len(ds))


def test_the_line_between_two_encodings(checkpoint, make_view):
    view = make_view(2, seed=4)
    ckpt = load_checkpoint(checkpoint)
    result = interpolate(ckpt, view[0], view[1], steps=5, precision="fp32")
    np.testing.assert_allclose(result.t, [0, 0.25, 0.5, 0.75, 1])
    assert result.density.shape == (5, 30, 30, 30) and result.species.dtype == np.uint8
    assert len(result.positions) == len(result.numbers) == 5
    with torch.no_grad():
        x = ckpt.model.scale(torch.from_numpy(result.targets))
        mu, _ = ckpt.model.vae.encode(x)
    np.testing.assert_allclose(result.z[0], mu[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.z[-1], mu[1].numpy(), rtol=1e-5, atol=1e-6)
    steps = np.diff(result.z, axis=0)
    np.testing.assert_allclose(steps, np.broadcast_to(steps[0], steps.shape), atol=1e-5)
    # the ends decode as the posterior-mean reconstructions do
    recon, _ = ckpt.model.reconstruct(torch.from_numpy(result.targets))
    np.testing.assert_allclose(result.density[[0, -1]], recon.numpy(), rtol=1e-4, atol=1e-6)
    assert result.ends[0]["material_id"] == "fake-0" and result.condition is None
    with pytest.raises(BadInputError, match=">= 2"):
        interpolate(ckpt, view[0], view[1], steps=1)


def test_interpolate_verb(checkpoint, store, tmp_path):
    from matplotlib.image import imread

    ds = crystalgrid.open_dataset(store)
    a, b = ds.split("test")[0], ds.split("val")[1]
    out = tmp_path / "line"
    args = ["interpolate", str(checkpoint), "--data", str(store), "--from", a["material_id"]]
    args += ["--to", str(b["index"]), "--steps", "4", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"4 steps from sample {a['index']} to {b['index']}" in result.output
    npz = np.load(out / "interpolation.npz")
    assert npz["density"].shape == (4, 30, 30, 30) and np.allclose(npz["t"], [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_array_equal(npz["targets"][0], a["density"])
    np.testing.assert_array_equal(npz["target_species"][1], b["species"])
    doc = json.loads((out / "atoms.json").read_text())
    assert [s["step"] for s in doc["steps"]] == [0, 1, 2, 3]
    assert doc["ends"][0]["material_id"] == a["material_id"]
    assert doc["ends"][1]["index"] == b["index"]
    for s in doc["steps"]:
        assert len(s["numbers"]) == s["n_atoms"]
        assert (s["cif"] is None) == (s["n_atoms"] == 0)
        if s["cif"]:
            assert (out / s["cif"]).stat().st_size > 0
    png = imread(out / "strip.png")
    assert png.shape[:2] == (INTERPOLATION_COLUMN[1], INTERPOLATION_COLUMN[0] * 6)
    assert png[..., :3].std() > 0


def test_interpolate_verb_user_errors(checkpoint, store, tmp_path):
    base = ["interpolate", str(checkpoint), "--data", str(store), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, [*base, "--from", "0", "--to", "missing-id"])
    assert result.exit_code == 2 and "no sample with material id" in result.stderr
    result = CliRunner().invoke(main, [*base, "--from", "0", "--to", "1", "--steps", "1"])
    assert result.exit_code == 2 and ">= 2" in result.stderr
    nostore = ["interpolate", str(checkpoint), "--data", str(tmp_path / "x.zarr")]
    result = CliRunner().invoke(main, [*nostore, "--from", "0", "--to", "1", "--out", "o"])
    assert result.exit_code == 2 and "dataset store not found" in result.stderr


def test_the_survey_scores_the_points_between_the_ends(store, checkpoint):
    from crystalgrid.models.latent.interpolate import interpolation_survey

    view = crystalgrid.open_dataset(store).split("train")
    survey = interpolation_survey(checkpoint, view, pairs=3, steps=4)
    assert survey["n_pairs"] == 3 and survey["t"] == [0.0, 0.3333, 0.6667, 1.0]
    assert survey["validity"]["n_samples"] == 6  # two inner points per pair
    assert survey["ends"]["validity"]["n_samples"] == 6
    assert survey["atoms_per_point"]["n_samples"] == 6
    assert survey["prior_log_density"] is None  # the tiny model has no learned prior
    with pytest.raises(BadInputError, match="steps must be >= 3"):
        interpolation_survey(checkpoint, view, pairs=3, steps=2)
