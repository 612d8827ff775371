"""The appendix-G realism scorer: latent mixes, a few training steps, scores in [0, 1], the
report's categories, save/load, and the `crystalgrid realism` verb."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import crystalgrid
from crystalgrid.cli import main
from crystalgrid.errors import BadInputError, CrystalgridError

torch = pytest.importorskip("torch")

from crystalgrid.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from crystalgrid.models.config import TrainConfig  # noqa: E402
from crystalgrid.models.latent.realism import (  # noqa: E402
    LambdaNet,
    load_scorer,
    mix_latents,
    save_scorer,
    score_grids,
    score_report,
    train_realism,
)
from crystalgrid.models.nets.classes import ClassMap  # noqa: E402
from crystalgrid.models.nets.model import ReferenceModel  # noqa: E402
from crystalgrid.spec import GridSpec  # noqa: E402

LOW_BETA = TrainConfig(
    latent_dim=8,
    encoder_channels=(2, 2, 4, 4),
    decoder_channels=(4, 2, 2),
    unet_base_channels=2,
    unet_levels=1,
    classes=(8, 26),
    beta=1e-8,
    device="cpu",
    precision="fp32",
)
SMALL = (2, 4, 4)


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    torch.manual_seed(0)
    model = ReferenceModel(LOW_BETA, 30, ClassMap(LOW_BETA.classes))
    return save_checkpoint(tmp_path_factory.mktemp("ae") / "ae.pt", model, spec=GridSpec())


@pytest.fixture(scope="module")
def scorer(autoencoder, make_view):
    return train_realism(
        autoencoder, make_view(8, seed=0), steps=3, batch_size=4, channels=SMALL, log_every=1
    )


def test_mix_latents_ends():
    z = torch.randn(3, 5)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mix_latents(z, torch.zeros(3), g), z)
    torch.testing.assert_close(
        mix_latents(z, torch.ones(3), torch.Generator().manual_seed(1)), noise
    )
    half = mix_latents(z, torch.full((3,), 0.5), torch.Generator().manual_seed(1))
    torch.testing.assert_close(half, 0.5 * z + 0.5 * noise)


def test_lambda_net_shapes():
    net = LambdaNet(SMALL)
    assert net(torch.rand(2, 1, 30, 30, 30)).shape == (2,)


def test_trains_a_few_steps_and_scores_in_unit_interval(scorer, make_view):
    assert [r["step"] for r in scorer.history] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and 0 <= r["mae"] <= 1 for r in scorer.history)
    grids = np.stack([make_view(3, seed=5)[i]["density"] for i in range(3)])
    scores = scorer.score(grids)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    with pytest.raises(ValueError, match="expected"):
        score_grids(scorer, np.zeros((1, 10, 10, 10)))


def test_report_categories(scorer, autoencoder, make_view):
    report = score_report(
        scorer, autoencoder, make_view(4, seed=2), n=4, seed=0, generators={"other": autoencoder}
    )
    for key in (
        "real",
        "real_decoded",
        "random_draws",
        "noise",
        "shuffled",
        "other_real_decoded",
        "other_random_draws",
    ):
        s = report[key]
        assert s["n"] == 4 and 0 <= s["mean"] <= 1 and s["std"] >= 0, key
    # the same checkpoint under another name scores the same grids the same way
    assert report["other_random_draws"]["mean"] == pytest.approx(report["random_draws"]["mean"])
    assert report["scorer"]["paper"]["real_decoded"] == "0.90 +- 0.01"
    json.dumps(report, allow_nan=False)


def test_save_and_load_round_trip(scorer, tmp_path, make_view):
    path = save_scorer(scorer, tmp_path / "r.pt")
    again = load_scorer(path)
    grids = make_view(2, seed=9)[0:2]["density"]
    np.testing.assert_allclose(again.score(grids), scorer.score(grids), rtol=1e-6)
    assert again.config["channels"] == list(SMALL) and again.history == scorer.history
    with pytest.raises(CrystalgridError, match="not found"):
        load_scorer(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(BadInputError, match="not a readable"):
        load_scorer(tmp_path / "junk.pt")


def test_conditional_autoencoder_is_refused(tmp_path, make_view):
    config = LOW_BETA.with_overrides(conditional=True)
    ckpt = save_checkpoint(
        tmp_path / "c.pt", ReferenceModel(config, 30, ClassMap([8, 26])), spec=GridSpec()
    )
    with pytest.raises(BadInputError, match="conditional"):
        train_realism(load_checkpoint(ckpt), make_view(4), steps=1, batch_size=4)


def test_realism_verb(autoencoder, tmp_path):
    store = tmp_path / "single.zarr"
    config = crystalgrid.BuildConfig(representation="single", samples_per_crystal=1)
    crystalgrid.build(None, store, config=config, quiet=True)
    out = tmp_path / "realism"
    args = ["realism", str(autoencoder), "--data", str(store), "--out", str(out)]
    result = CliRunner().invoke(
        main, [*args, "--steps", "2", "--batch-size", "4", "-n", "4", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "random_draws" in result.output and (out / "realism.pt").is_file()
    report = json.loads((out / "realism.json").read_text())
    assert report["real_decoded"]["n"] == 4 and report["data"]["eval_split"] == "test"
    assert report["scorer"]["config"]["steps"] == 2
    # score again with the saved scorer: no training, same numbers
    again = tmp_path / "again"
    result = CliRunner().invoke(
        main,
        [
            "realism",
            str(autoencoder),
            "--data",
            str(store),
            "--out",
            str(again),
            "-n",
            "4",
            "--scorer",
            str(out / "realism.pt"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert not (again / "realism.pt").exists()
    assert json.loads((again / "realism.json").read_text())["real"] == report["real"]


def test_reference_autoencoder_config():
    from pathlib import Path

    models = Path(__file__).resolve().parents[3] / "models"
    config = TrainConfig.from_file("realism-ae")
    paper = TrainConfig.from_file("vae-unet-single")
    assert (models / "realism-ae.md").is_file()
    assert config.beta < paper.beta and not config.conditional
    assert config.latent_dim == paper.latent_dim == 300
