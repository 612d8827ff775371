"""The peak decoder's threshold: tuned on a split by F1, recorded with the checkpoint, used by
evaluate, and written from the CLI (never into a shipped model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from crystalgrid.cli import main  # noqa: E402
from crystalgrid.errors import BadInputError  # noqa: E402
from crystalgrid.models.checkpoint import (  # noqa: E402
    DECODER_METADATA,
    load_checkpoint,
    update_metadata,
)
from crystalgrid.models.scoring import evaluate as evaluate_module  # noqa: E402
from crystalgrid.models.scoring import threshold as threshold_module  # noqa: E402
from crystalgrid.models.scoring.evaluate import evaluate  # noqa: E402
from crystalgrid.models.scoring.threshold import tune_threshold  # noqa: E402

# Class 1 of the tiny checkpoint's classes (8, 22, 38) is oxygen.
TRUE_VOXELS = [(5, 5, 5), (15, 15, 15), (24, 8, 20)]
BUMP_VOXELS = [(5, 24, 12), (20, 20, 5)]


class _Split:
    """Three atoms a sample at voxel centres; ``len``, ``iter_batches``, ``spec``."""

    def __init__(self, n: int, spec):
        self.spec, self.n = spec, n

    def __len__(self) -> int:
        return self.n

    def iter_batches(self, batch_size, **_):
        h = self.spec.voxel
        positions = (np.array(TRUE_VOXELS, dtype=np.float64) + 0.5) * h
        for start in range(0, self.n, batch_size):
            k = min(batch_size, self.n - start)
            yield {
                "density": np.zeros((k, *self.spec.shape), dtype=np.float32),
                "species": np.zeros((k, *self.spec.shape), dtype=np.uint8),
                "atom_positions": [positions] * k,
                "atom_numbers": [np.full(3, 8, dtype=np.uint8)] * k,
            }


def _scores(spec, n_classes: int) -> np.ndarray:
    """U-Net logits: the true atoms at log-odds 5, two bumps at log-odds 1.2."""
    logits = np.full((n_classes, *spec.shape), -10.0, dtype=np.float32)
    logits[0] = 0.0
    for ijk in TRUE_VOXELS:
        logits[(1, *ijk)] = 5.0
    for ijk in BUMP_VOXELS:
        logits[(1, *ijk)] = 1.2
    return logits


@pytest.fixture
def crafted(monkeypatch, checkpoint):
    """The tiny checkpoint whose U-Net 'scores' are the crafted logits above."""
    ckpt = load_checkpoint(checkpoint)
    logits = _scores(ckpt.spec, ckpt.class_map.n_classes)

    def outputs(ckpt, view, runtime, *, batch_size, limit=None, source="reconstruction", **_):
        n = len(view) if limit is None else min(limit, len(view))
        for batch in view.iter_batches(batch_size):
            k = len(batch["density"])
            n -= k
            yield batch, batch["density"], np.stack([logits] * k)
            if n <= 0:
                return

    monkeypatch.setattr(threshold_module, "model_outputs", outputs)
    monkeypatch.setattr(evaluate_module, "model_outputs", outputs)
    return ckpt


def test_the_best_f1_drops_the_bumps_and_keeps_the_atoms(crafted):
    split = _Split(4, crafted.spec)
    tuning = tune_threshold(crafted, split, quiet=True)
    rows = {row["threshold"]: row for row in tuning["table"]}
    assert rows[0.0]["n_pred_atoms"] == 4 * 5 and rows[0.0]["recall"] == 1.0
    assert rows[0.0]["precision"] == pytest.approx(3 / 5)
    assert rows[0.0]["f1"] == pytest.approx(0.75)
    # Every threshold in [1.2, 5) keeps exactly the true atoms; the tie goes to the one
    # nearest 0.
    assert tuning["threshold"] == 1.5
    assert rows[1.5]["f1"] == 1.0 and rows[1.5]["count_exact"] == 1.0
    assert rows[6.0]["n_pred_atoms"] == 0 and rows[6.0]["f1"] == 0.0
    assert tuning["n_samples"] == 4 and tuning["source"] == "reconstruction"
    json.dumps(tuning, allow_nan=False)
    assert tune_threshold(crafted, split, limit=1, quiet=True)["n_samples"] == 1


def test_bad_tuning_requests_are_one_clear_error(crafted):
    split = _Split(2, crafted.spec)
    with pytest.raises(BadInputError, match="at least one candidate"):
        tune_threshold(crafted, split, thresholds=())
    with pytest.raises(BadInputError, match="source must be one of"):
        tune_threshold(crafted, split, source="density")
    with pytest.raises(BadInputError, match="empty"):
        tune_threshold(crafted, _Split(0, crafted.spec))
    from crystalgrid.spec import GridSpec

    with pytest.raises(BadInputError, match="grid spec"):
        tune_threshold(crafted, _Split(2, GridSpec(side=12.0)))


def test_evaluate_uses_the_recorded_threshold(crafted, checkpoint, tmp_path):
    split = _Split(3, crafted.spec)
    assert crafted.peak_threshold == 0.0
    default = evaluate(crafted, split, ceiling=False, quiet=True)
    assert default["n_pred_atoms"] == 15 and default["peak_threshold"] == 0.0
    assert default["pred_within_radius"] == pytest.approx(0.6)

    copy = tmp_path / "tuned.pt"
    copy.write_bytes(checkpoint.read_bytes())
    update_metadata(copy, **{DECODER_METADATA: {"threshold": 1.5, "criterion": "f1"}})
    tuned = load_checkpoint(copy)
    assert tuned.peak_threshold == 1.5
    assert tuned.metadata[DECODER_METADATA]["criterion"] == "f1"
    kept, before = tuned.model.state_dict(), crafted.model.state_dict()
    assert kept.keys() == before.keys()
    assert all(torch.equal(kept[k], before[k]) for k in kept)  # the weights are as they were
    scores = evaluate(tuned, split, ceiling=False, quiet=True)
    assert scores["n_pred_atoms"] == 9 and scores["count_exact"] == 1.0
    assert scores["peak_threshold"] == 1.5
    # An explicit threshold wins over the recorded one.
    assert evaluate(tuned, split, threshold=0.0, ceiling=False, quiet=True)["n_pred_atoms"] == 15


def test_a_shipped_model_is_never_rewritten():
    with pytest.raises(BadInputError, match=r"shipped model.*copy its file"):
        update_metadata("baseline-1h-cpu-single", decoder={"threshold": 1.0})


def test_tune_threshold_cli_writes_and_refuses(crafted, checkpoint, tmp_path, monkeypatch):
    import crystalgrid

    class _Dataset:
        spec = crafted.spec

        def __init__(self) -> None:
            self.splits = {"train": 2, "val": 4}

        def split(self, name):
            if name not in self.splits:
                raise ValueError(f"unknown split {name!r}")
            return _Split(self.splits[name], crafted.spec)

    monkeypatch.setattr(crystalgrid.dataset, "open_dataset", lambda path: _Dataset())
    store = tmp_path / "store.zarr"
    store.mkdir()
    copy = tmp_path / "run.pt"
    copy.write_bytes(checkpoint.read_bytes())
    out = tmp_path / "tuning.json"
    args = ["tune-threshold", str(copy), "--data", str(store), "--quiet", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| 1.5 (best) | 12 / 12 | 100.0% | 100.0% | 1.000 | 100.0% |" in result.output
    assert "best threshold: 1.5" in result.output
    written = json.loads(out.read_text())
    assert written["data"]["split"] == "val"
    # The per-cell reader's prior is counted on the training split: two oxygen samples.
    assert written["cell_species"]["counts"][7] == 2 and sum(written["cell_species"]["counts"]) == 2
    assert load_checkpoint(copy).peak_threshold == 0.0  # not written without --write

    result = CliRunner().invoke(main, [*args, "--write"])
    assert result.exit_code == 0, result.output
    recorded = load_checkpoint(copy).metadata[DECODER_METADATA]
    assert recorded["threshold"] == 1.5 and recorded["data"]["split"] == "val"
    assert "table" not in recorded

    shipped = ["tune-threshold", "baseline-1h-cpu-single", "--data", str(store), "--write"]
    result = CliRunner().invoke(main, shipped)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "shipped model" in lines[0]
    result = CliRunner().invoke(main, [*args[:4], "--split", "test"])
    assert result.exit_code == 2 and "no split 'test'" in result.stderr


class _LightSplit(_Split):
    """The same oxygen atoms, but their density holds 6 electrons each (a reconstruction
    that lost two), as the 'reconstruction' the crafted outputs hand back."""

    def iter_batches(self, batch_size, **kw):
        from crystalgrid.grids import density_grid

        for batch in super().iter_batches(batch_size, **kw):
            grid = density_grid(batch["atom_positions"][0], np.full(3, 6), self.spec)
            batch["density"] = np.stack([grid.astype(np.float32)] * len(batch["density"]))
            yield batch


def _recorded(checkpoint, tuning, tmp_path):
    """A copy of the tiny checkpoint with ``tuning`` recorded in it, loaded."""
    copy = tmp_path / "calibrated.pt"
    copy.write_bytes(checkpoint.read_bytes())
    threshold_module.record_tuning(copy, tuning)
    return load_checkpoint(copy)


def test_the_amplitudes_are_calibrated_at_the_best_threshold_and_used(
    crafted, checkpoint, tmp_path
):
    split = _LightSplit(3, crafted.spec)
    tuning = tune_threshold(crafted, split, quiet=True)
    amplitudes = tuning["amplitudes"]
    assert amplitudes["offset"] == pytest.approx(2.0, abs=0.05)
    assert amplitudes["n_atoms"] == 9  # the bumps are gone at the best threshold
    assert amplitudes["species_exact"] == 1.0 and amplitudes["species_exact_uncalibrated"] == 0.0
    assert "+2.00 electrons added" in "\n".join(threshold_module.tuning_table(tuning))
    # On the true densities there is nothing to calibrate.
    assert tune_threshold(crafted, split, source="truth", quiet=True)["amplitudes"] is None

    calibrated = _recorded(checkpoint, tuning, tmp_path)
    assert calibrated.amplitude_offset == amplitudes["offset"] and crafted.amplitude_offset == 0
    read = {"ceiling": False, "decoder": "unet-amplitudes", "quiet": True}
    assert evaluate(calibrated, split, **read)["species_exact"] == 1.0
    assert evaluate(crafted, split, threshold=1.5, **read)["species_exact"] == 0.0


def test_the_cell_species_reader_is_tuned_with_the_training_prior_and_used(
    crafted, checkpoint, tmp_path
):
    split = _LightSplit(3, crafted.spec)
    prior = np.zeros(118, dtype=np.int64)
    prior[[7, 21]] = (40, 10)  # oxygen and titanium cells
    tuning = tune_threshold(crafted, split, element_prior=prior, quiet=True)
    cell, tuned = tuning["cell_species"], tuning["cell_species_tuning"]
    assert cell["offset"] == tuning["amplitudes"]["offset"]
    assert cell["counts"] == prior.tolist()
    assert tuned["n_atoms"] == 9 and tuned["species_exact"] == 1.0
    assert len(tuned["grid"]) == len(threshold_module.CELL_SIGMAS) * len(
        threshold_module.CELL_WEIGHTS
    )
    assert "Species read per cell" in "\n".join(threshold_module.tuning_table(tuning))
    assert tune_threshold(crafted, split, source="truth", quiet=True)["cell_species"] is None

    calibrated = _recorded(checkpoint, tuning, tmp_path)
    assert calibrated.cell_species.to_dict() == cell
    read = {"ceiling": False, "decoder": "unet-cell", "quiet": True}
    assert evaluate(calibrated, split, **read)["species_exact"] == 1.0


def test_the_training_split_s_elements_are_counted_per_sample():
    class Cells:
        def iter_batches(self, batch_size, **_):
            yield {"atom_numbers": [np.array([8, 8, 22, 0]), np.array([8, 1])]}

    counts = threshold_module.split_element_counts(Cells())
    assert counts.shape == (118,) and counts.sum() == 4
    assert (counts[7], counts[21], counts[0]) == (2, 1, 1)
