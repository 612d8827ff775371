"""Conditional generation (appendix G.1): the trainer flag, the Z -> condition calibration
stored in the checkpoint, the condition changing the output, and the check reported by
`crystalgrid sample --condition Z`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import crystalgrid
from crystalgrid.cli import main
from crystalgrid.errors import BadInputError
from crystalgrid.models.latent.conditioning import condition_calibration, condition_for_z
from crystalgrid.models.scoring.generated import conditional_check
from crystalgrid.spec import GridSpec

torch = pytest.importorskip("torch")

from crystalgrid.models.checkpoint import load_checkpoint  # noqa: E402
from crystalgrid.models.latent.draws import random_draws  # noqa: E402
from crystalgrid.models.training.loop import train  # noqa: E402


@pytest.fixture(scope="module")
def conditional_run(make_view, tmp_path_factory):
    """Two training steps of a tiny conditional model on Gaussians of O and Fe."""
    from crystalgrid.models.config import TrainConfig

    config = TrainConfig(
        latent_dim=8,
        encoder_channels=(2, 2, 4, 4),
        decoder_channels=(4, 2, 2),
        unet_base_channels=2,
        unet_levels=1,
        conditional=True,
        lr=3e-3,
        batch_size=4,
        epochs=1,
        device="cpu",
        precision="fp32",
        log_every=1,
        prefetch=0,
    )
    out = tmp_path_factory.mktemp("cond")
    view = make_view(8, seed=0, max_atoms=1)
    last = train(config, view, None, out_dir=out, quiet=True)
    return last, view


def test_calibration_on_known_grids(make_view):
    view = make_view(12, seed=3, max_atoms=1)
    calib = condition_calibration(view, density_scale=2.0)
    assert calib["z"] == [8, 26] and sum(calib["count"]) == 12 == calib["samples"]
    # An isolated atom peaks at about Z / (2 pi)^1.5 (sigma = 1 Å); neighbours add a little,
    # the voxel grid takes a little (the peak falls between voxel centres).
    peak = 2.0 * GridSpec().norm
    for z, c in zip(calib["z"], calib["median"], strict=True):
        assert 0.85 * z * peak < c < 1.3 * z * peak
    assert calib["slope"] > 0
    # the table wins for a seen Z; the line for an unseen one; the analytic peak without one
    np.testing.assert_allclose(condition_for_z([8, 26], calib), calib["median"], rtol=1e-6)
    line = calib["slope"] * 50 + calib["intercept"]
    assert condition_for_z(50, calib)[0] == pytest.approx(line, rel=1e-6)
    assert condition_for_z(26, None, density_scale=2.0)[0] == pytest.approx(26 * peak, rel=1e-6)
    with pytest.raises(BadInputError, match=r"1\.\.118"):
        condition_for_z(0, calib)
    assert condition_calibration(view, limit=5)["samples"] == 5


def test_conditional_check_by_hand():
    req = [8, 8, 26, 26, 26]
    numbers = [np.array([8]), np.array([1, 8]), np.array([26, 8]), np.array([24]), np.array([])]
    check = conditional_check(
        req, numbers, within=2, requested_c=[1, 1, 2, 2, 2], max_density=[0.9, 1.1, 2.1, 1.8, 2.0]
    )
    assert check["n_samples"] == 5 and check["n_empty"] == 1
    assert check["fraction_exact"] == 0.75 and check["fraction_within"] == 1.0
    assert check["mean_abs_dz"] == 0.5
    assert check["pearson_r"] == pytest.approx(np.corrcoef([8, 8, 26, 26], [8, 8, 26, 24])[0, 1])
    assert check["per_request"]["26"] == {
        "n": 3,
        "n_empty": 1,
        "mean": 25.0,
        "median": 25.0,
        "fraction_exact": 0.5,
    }
    expected = np.corrcoef([1, 1, 2, 2, 2], [0.9, 1.1, 2.1, 1.8, 2.0])[0, 1]
    assert check["density_pearson_r"] == pytest.approx(expected)
    one = conditional_check([8, 8], [np.array([8]), np.array([9])])
    assert one["pearson_r"] is None  # a single requested value has no correlation


def test_flag_trains_and_stores_the_calibration(conditional_run):
    last, _ = conditional_run
    ckpt = load_checkpoint(last)
    assert ckpt.config.conditional and ckpt.model.vae.conditional
    calib = ckpt.metadata["condition_calibration"]
    assert calib["z"] == [8, 26] and calib["samples"] == 8
    records = [json.loads(line) for line in (last.parent / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert len(steps) == 2 and all(np.isfinite(r["loss"]) for r in steps)


def test_the_condition_changes_the_output(conditional_run):
    last, _ = conditional_run
    ckpt = load_checkpoint(last)
    draws = random_draws(ckpt, 3, seed=1, condition_z=[8, 26])
    assert len(draws) == 6 and draws.condition_z.tolist() == [8, 8, 8, 26, 26, 26]
    np.testing.assert_array_equal(draws.z[:3], draws.z[3:])  # same z, only c differs
    assert draws.condition[0] < draws.condition[3]
    assert not np.allclose(draws.density[:3], draws.density[3:])
    with pytest.raises(BadInputError, match="conditional model"):
        random_draws(ckpt, 2)


def test_sample_verb_reports_the_check(conditional_run, tmp_path):
    last, _ = conditional_run
    out = tmp_path / "cond"
    args = ["sample", str(last), "-n", "2", "--out", str(out), "--condition", "8"]
    result = CliRunner().invoke(main, [*args, "--condition", "26", "--within", "3"])
    assert result.exit_code == 0, result.output
    assert "largest Z generated vs requested" in result.output
    report = json.loads((out / "report.json").read_text())
    check = report["conditional"]
    assert check["n_samples"] == 4 and check["within"] == 3
    assert set(check["per_request"]) == {"8", "26"}
    assert {"pearson_r", "fraction_exact", "fraction_within", "mean_abs_dz"} <= set(check)
    assert check["calibration"] == "training split (checkpoint metadata)"
    atoms = json.loads((out / "atoms.json").read_text())
    assert [s["condition_z"] for s in atoms["samples"]] == [8, 8, 26, 26]
    assert np.load(out / "grids.npz")["condition"].shape == (4,)
    bare = CliRunner().invoke(main, ["sample", str(last), "--out", str(tmp_path / "x")])
    assert bare.exit_code == 2 and "--condition" in bare.stderr


def test_train_verb_flag(tmp_path):
    """`crystalgrid train --conditional` on a real store: one step, the flag is in the config."""
    store = tmp_path / "single.zarr"
    config = crystalgrid.BuildConfig(representation="single", samples_per_crystal=1)
    crystalgrid.build(None, store, config=config, quiet=True)
    cfg = tmp_path / "tiny.json"
    cfg.write_text(
        json.dumps(
            {
                "latent_dim": 8,
                "encoder_channels": [2, 2, 4, 4],
                "decoder_channels": [4, 2, 2],
                "unet_base_channels": 2,
                "unet_levels": 1,
                "batch_size": 4,
                "device": "cpu",
                "prefetch": 0,
            }
        )
    )
    run = tmp_path / "run"
    args = ["train", "--data", str(store), "--config", str(cfg), "--out", str(run)]
    args += ["--conditional", "--max-steps", "1", "--val-split", "none", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt.config.conditional
    assert ckpt.metadata["condition_calibration"]["samples"] > 100


def test_reference_conditional_config():
    from pathlib import Path

    from crystalgrid.models.config import TrainConfig

    models = Path(__file__).resolve().parents[3] / "models"
    config = TrainConfig.from_file("vae-unet-conditional")
    paper = TrainConfig.from_file("vae-unet-single")
    assert config.conditional and (models / "vae-unet-conditional.md").is_file()
    # the paper's single-cell configuration with the flag on, nothing else changed
    assert config.with_overrides(conditional=False, notes=paper.notes) == paper


def test_logvar_is_bounded_and_keeps_its_gradient():
    """A large condition (or a wide bottleneck's first Adam steps) cannot blow up
    exp(logvar): every VAE bounds it, softly at the top so it can come back."""
    from crystalgrid.models.nets.vae import LOGVAR_MAX, LOGVAR_MIN, VAE

    torch.manual_seed(0)
    kw = {"latent_dim": 8, "encoder_channels": (2, 2, 4, 4), "decoder_channels": (4, 2, 2)}
    cond, plain = VAE(conditional=True, **kw), VAE(**kw)
    plain.load_state_dict(cond.state_dict())
    with torch.no_grad():
        cond.fc_logvar.bias.fill_(50.0)
        plain.fc_logvar.bias.fill_(50.0)
        x = torch.rand(2, 1, 30, 30, 30)
        _, logvar = cond.encode(x, torch.tensor([1e3, 1e-3]))
        assert logvar.min() >= LOGVAR_MIN and logvar.max() <= LOGVAR_MAX
    with torch.no_grad():
        plain.fc_logvar.bias.fill_(4.0)  # just past the bound: still a gradient back
    _, logvar = plain.encode(x)
    assert float(logvar.detach().max()) <= LOGVAR_MAX
    logvar.sum().backward()
    assert float(plain.fc_logvar.bias.grad.abs().min()) > 0
    with torch.no_grad():  # and below the bound it is the identity
        plain.fc_logvar.bias.fill_(0.0)
        plain.fc_logvar.weight.zero_()
        torch.testing.assert_close(plain.encode(x)[1], torch.zeros(2, 8), atol=0.01, rtol=0)
