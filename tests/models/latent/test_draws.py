"""Random draws (`crystalgrid sample`): seeded draws, and the verb's files on a real demo store
with an untrained tiny checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from crystalgrid.cli import main
from crystalgrid.errors import BadInputError

torch = pytest.importorskip("torch")

from crystalgrid.models.checkpoint import load_checkpoint  # noqa: E402
from crystalgrid.models.latent.draws import random_draws  # noqa: E402

# ---- random draws ------------------------------------------------------------------------------


def test_random_draws_are_seeded(checkpoint):
    ckpt = load_checkpoint(checkpoint)
    a = random_draws(ckpt, 3, seed=7)
    b = random_draws(ckpt, 3, seed=7)
    c = random_draws(ckpt, 3, seed=8)
    assert a.z.shape == (3, 8) and a.density.shape == (3, 30, 30, 30)
    assert a.species.dtype == np.uint8 and len(a.positions) == len(a.numbers) == 3
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(a.density, b.density)
    assert not np.array_equal(a.z, c.z)
    assert set(np.unique(a.species)) <= {0, 8, 22, 38}
    with pytest.raises(BadInputError, match="not conditional"):
        random_draws(ckpt, 2, condition_z=[8])
    with pytest.raises(BadInputError, match=">= 1"):
        random_draws(ckpt, 0)


# ---- the verb ----------------------------------------------------------------------------------


def _one_line_error(result, text):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crystalgrid: error: ") and text in lines[0]


def test_sample_verb_writes_what_it_says(checkpoint, store, tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "draws"
    args = ["sample", str(checkpoint), "-n", "5", "--out", str(out), "--data", str(store)]
    result = CliRunner().invoke(main, [*args, "--seed", "3", "--real-limit", "50"])
    assert result.exit_code == 0, result.output
    assert "5 samples written" in result.output and "valid (CDVAE)" in result.output

    grids = np.load(out / "grids.npz")
    assert grids["z"].shape == (5, 8) and grids["density"].shape == (5, 30, 30, 30)
    assert grids["species"].shape == (5, 30, 30, 30) and grids["species"].dtype == np.uint8
    atoms = json.loads((out / "atoms.json").read_text())
    assert len(atoms["samples"]) == 5 and atoms["seed"] == 3
    with_atoms = [s for s in atoms["samples"] if s["n_atoms"]]
    cifs = sorted(p.name for p in (out / "cif").glob("*.cif"))
    assert cifs == sorted(s["cif"].split("/")[-1] for s in with_atoms)
    for s in atoms["samples"]:
        assert len(s["numbers"]) == len(s["positions"]) == s["n_atoms"]

    report = json.loads((out / "report.json").read_text())
    assert report["n_samples"] == 5
    assert set(report["spacing"]) == {"samples", "real"}
    real = report["spacing"]["real"]
    assert real["n_samples"] == 50 and real["n_spacings"] > 100
    assert 1.0 < real["percentiles"]["50"] < 4.0  # real crystals: ~2-3 Å to the nearest atom
    assert report["validity"]["real"]["fraction"] == 1.0  # stored crystals are valid
    assert report["validity"]["samples"]["n_samples"] == 5
    assert "conditional" not in report
    png = imread(out / "spacing.png")
    assert png.shape[:2] == (400, 640) and png[..., :3].std() > 0


def test_sample_without_data_or_grids(checkpoint, tmp_path):
    out = tmp_path / "d"
    args = ["sample", str(checkpoint), "-n", "2", "--out", str(out), "--no-grids", "--no-cif"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert not (out / "grids.npz").exists() and not (out / "cif").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["spacing"]["real"] is None and report["validity"]["real"] is None
    assert (out / "spacing.png").stat().st_size > 0


def test_sample_user_errors_are_one_line(checkpoint, tmp_path):
    missing = CliRunner().invoke(main, ["sample", str(tmp_path / "no.pt"), "--out", str(tmp_path)])
    _one_line_error(missing, "checkpoint not found")
    args = ["sample", str(checkpoint), "--out", str(tmp_path / "o"), "--data", str(tmp_path / "x")]
    _one_line_error(CliRunner().invoke(main, args), "dataset store not found")
    args = ["sample", str(checkpoint), "--out", str(tmp_path / "o"), "--condition", "26"]
    _one_line_error(CliRunner().invoke(main, args), "not conditional")


def test_package_exports_resolve():
    import crystalgrid.models as models

    for name in (
        "random_draws",
        "spacing_distribution",
        "structural_validity",
        "MatchScorer",
        "train_realism",
        "show_sample",
        "resolve_sample",
        "conditional_check",
    ):
        assert name in models.__all__
    for name in models.__all__:
        assert getattr(models, name) is not None
