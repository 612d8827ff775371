"""StructureMatcher scoring (CDVAE's settings) of single cells mapped back into the true
lattice: a perfect reconstruction matches, a scrambled one does not, the verb says the lattice
is given."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import crystalgrid
from crystalgrid.cli import main
from crystalgrid.errors import CrystalgridError
from crystalgrid.models.scoring.matching import (
    CDVAE_MATCHER,
    LATTICE_NOTE,
    MatchScorer,
    match_checkpoint,
    periodic_validity,
    to_crystal_frame,
)

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def samples(store):
    """(sample, true structure) of every sample of the test and val splits."""
    ds = crystalgrid.open_dataset(store)
    crystals = ds.group["samples/crystal"][:]
    out = []
    for name in ("test", "val"):
        for s in ds.split(name):
            out.append((s, ds.structure(int(crystals[s["index"]]))))
    return out


def test_mapping_back_recovers_the_source_sites(samples):
    sample, true = next((s, t) for s, t in samples if s["n_outside"] == 0 and len(t) > 4)
    pred = to_crystal_frame(
        sample["atom_positions"],
        sample["atom_numbers"],
        transform=sample["transform"],
        lattice=true.lattice,
    )
    assert pred.lattice == true.lattice and len(pred) == len(true)
    assert np.all(pred.frac_coords >= 0) and np.all(pred.frac_coords < 1)
    # every predicted site sits on a true site of the same species (periodic distance)
    for site in pred:
        d = [site.distance(t) for t in true if t.specie == site.specie]
        assert min(d) < 1e-4


def test_a_perfect_reconstruction_matches(samples):
    scorer = MatchScorer()
    for sample, true in samples:
        record = scorer.add(
            sample["atom_positions"],
            sample["atom_numbers"],
            transform=sample["transform"],
            true_structure=true,
            complete=sample["n_outside"] == 0,
        )
        if sample["n_outside"] == 0:
            assert record["matched"] and record["rms"] < 1e-5, sample["material_id"]
    result = scorer.result()
    assert result["complete_cells"]["match_rate"] == 1.0
    assert result["complete_cells"]["n_samples"] >= 30
    assert result["rms_mean"] < 1e-5 and result["valid_rate"] == 1.0
    sizes = result["by_cell_size"]
    assert list(sizes) == ["1-4", "5-8", "9-16", "17+"]
    assert sum(b["n_samples"] for b in sizes.values()) == len(samples)
    # cells that stick out of the box lose atoms: they cannot match
    assert result["match_rate"] == result["n_matched"] / result["n_samples"] < 1.0
    assert result["matcher"] == {
        **CDVAE_MATCHER,
        "primitive_cell": True,
        "scale": True,
        "attempt_supercell": False,
    }
    assert result["lattice"] == LATTICE_NOTE and "given, not predicted" in LATTICE_NOTE
    json.dumps(result, allow_nan=False)


def test_a_scrambled_reconstruction_does_not_match(samples):
    """Random positions (seeded) in the cells of 13+ atoms and 2+ species. (CDVAE's tolerances
    are loose: random positions in cells of 4-8 atoms match about a third of the time, and
    even swapping Sr and an O in SrTiO3 matches; hence the verb's random baseline.)"""
    rng = np.random.default_rng(0)
    scorer = MatchScorer()
    big = [
        (s, t)
        for s, t in samples
        if s["n_outside"] == 0 and len(t) >= 13 and len(t.composition) >= 2
    ]
    assert len(big) >= 4
    for sample, true in big:
        scrambled = rng.uniform(0, 10, size=sample["atom_positions"].shape)
        record = scorer.add(
            scrambled, sample["atom_numbers"], transform=sample["transform"], true_structure=true
        )
        assert not record["matched"] and record["rms"] is None, sample["material_id"]
    result = scorer.result()
    assert result["n_matched"] == 0 and result["match_rate"] == 0.0 and result["rms_mean"] is None


def test_invalid_or_empty_predictions_never_match(samples):
    sample, true = next((s, t) for s, t in samples if s["n_outside"] == 0)
    scorer = MatchScorer()
    record = scorer.add(
        np.zeros((0, 3)), np.zeros(0, dtype=int), transform=sample["transform"], true_structure=true
    )
    assert record == {
        "valid": False,
        "matched": False,
        "rms": None,
        "n_pred": 0,
        "n_true": len(true),
    }
    # a duplicated atom 0.1 Å away: two sites closer than 0.5 Å
    pos = np.vstack([sample["atom_positions"], sample["atom_positions"][:1] + 0.1])
    num = np.concatenate([sample["atom_numbers"], sample["atom_numbers"][:1]])
    assert not scorer.add(pos, num, transform=sample["transform"], true_structure=true)["valid"]
    assert scorer.result()["n_valid"] == 0 and scorer.result()["match_rate"] == 0.0


def test_periodic_validity():
    from pymatgen.core import Lattice, Structure

    ok = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert periodic_validity(ok)
    close = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    assert not periodic_validity(close)
    # close only through the periodic image across the cell face
    image = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0.01, 0, 0], [0.97, 0, 0]])
    assert not periodic_validity(image)
    assert periodic_validity(Structure(Lattice.cubic(3.0), ["Na"], [[0, 0, 0]]))
    flat = Structure(Lattice.orthorhombic(4, 4, 0.001), ["Na"], [[0, 0, 0]])
    assert not periodic_validity(flat)


def test_ceiling_only_and_repeated_store_is_refused(store):
    view = crystalgrid.open_dataset(store).split("test")
    result = match_checkpoint(None, view, limit=6)
    assert result["ceiling"]["n_samples"] == 6 and result["lattice"] == LATTICE_NOTE
    assert result["random_baseline"]["n_samples"] == 6
    again = match_checkpoint(None, view, limit=6, ceiling=False)
    assert again["random_baseline"] == result["random_baseline"]  # seeded

    class Repeated:
        representation = "repeated"

    class View:
        dataset = Repeated()

    with pytest.raises(CrystalgridError, match="single-cell samples"):
        match_checkpoint(None, View())


def test_match_verb(store, checkpoint, tmp_path):
    ckpt = checkpoint
    out = tmp_path / "match.json"
    args = ["match", str(ckpt), "--data", str(store), "--limit", "5", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "the lattice is given, not predicted" in result.output
    scores = json.loads(out.read_text())
    assert scores["n_samples"] == 5 and scores["ceiling"]["n_samples"] == 5
    assert scores["random_baseline"]["n_samples"] == 5 and "random baseline" in result.output
    assert {"match_rate", "rms_mean", "n_valid", "complete_cells", "matcher"} <= set(scores)
    assert scores["lattice"] == LATTICE_NOTE and scores["data"]["split"] == "test"
    stdout = CliRunner().invoke(main, [*args[:-3], "--no-ceiling", "--quiet"])
    assert stdout.exit_code == 0 and "ceiling" not in json.loads(stdout.stdout)
    missing = CliRunner().invoke(main, ["match", str(tmp_path / "x.pt"), "--data", str(store)])
    assert missing.exit_code == 2 and "checkpoint not found" in missing.stderr


def test_match_reads_reconstructions_with_the_chosen_decoder(store, checkpoint):
    view = crystalgrid.open_dataset(store).split("test")
    for decoder in ("unet-components", "unet-cell"):
        scores = match_checkpoint(
            checkpoint, view, limit=3, ceiling=False, baseline=False, decoder=decoder
        )
        assert scores["decoder"] == decoder and scores["n_samples"] == 3
    with pytest.raises(CrystalgridError, match="decoder must be one of"):
        match_checkpoint(checkpoint, view, limit=3, decoder="peakfit")
