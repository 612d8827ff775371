"""The reference configurations in models/ load, and describe the paper's architecture."""

from __future__ import annotations

from pathlib import Path

import pytest

from crystalgrid.errors import ConfigError, CrystalgridError
from crystalgrid.models.config import TrainConfig

MODELS = Path(__file__).resolve().parents[2] / "crystalgrid" / "models" / "configs"
CARDS = Path(__file__).resolve().parents[2] / "models"


@pytest.mark.parametrize("name", ["vae-unet-single", "vae-unet-repeated"])
def test_paper_configs(name):
    config = TrainConfig.from_file(MODELS / f"{name}.json")
    assert (CARDS / f"{name}.md").is_file()
    assert config.latent_dim == 300 and config.encoder_channels == (16, 32, 64, 128)
    assert config.decoder_channels == (64, 32, 16) and config.gamma == 0.1
    assert config.lr == 1e-5 and config.batch_size == 24
    assert config.notes["representation"] == name.rsplit("-", 1)[1]


def test_tiny_config_and_round_trip(tmp_path):
    config = TrainConfig.from_file(MODELS / "tiny-cpu.json")
    assert config.device == "cpu"
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_bad_configs_are_user_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"latent_dim": 0, "lr": -1}')
    with pytest.raises(CrystalgridError, match="latent_dim must be >= 1, got 0; lr must be > 0"):
        TrainConfig.from_file(bad)
    bad.write_text('{"background_prior": 1.0}')
    with pytest.raises(CrystalgridError, match=r"background_prior must be in \(0, 1\), got 1.0"):
        TrainConfig.from_file(bad)
    bad.write_text('{"nope": 1}')
    with pytest.raises(CrystalgridError, match="unknown training configuration keys"):
        TrainConfig.from_file(bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainConfig.from_file(bad)


@pytest.mark.parametrize(
    ("name", "budget_name"),
    [
        ("overfit-cpu", "overfit-cpu"),
        ("baseline-1h-cpu-single", "1h-cpu"),
        ("baseline-2h-cpu-repeated", "2h-cpu-repeated"),
        ("gpu-10m", "10m-gpu"),
    ],
)
def test_cpu_configs_are_the_benchmark_budgets(name, budget_name):
    from crystalgrid.baseline import BUDGETS

    config = TrainConfig.from_file(MODELS / f"{name}.json")
    assert (CARDS / f"{name}.md").is_file()
    budget = BUDGETS[budget_name].train
    assert config.with_overrides(notes=budget.notes) == budget  # the budget reads the file
    assert budget.notes["budget"] == budget_name
    # What made the chain learn on a CPU (models/overfit-cpu.md says why).
    assert config.output_activation == "softplus" and not config.ce_into_decoder


@pytest.mark.parametrize(
    "name", ["vae-unet-single", "vae-unet-repeated", "vae-unet-conditional", "realism-ae"]
)
def test_reference_configs_avoid_the_dead_output(name):
    config = TrainConfig.from_file(MODELS / f"{name}.json")
    assert config.output_activation == "softplus" and not config.ce_into_decoder


def test_shipped_configs_load_by_name():
    from crystalgrid.models.config import shipped_config, shipped_configs

    names = shipped_configs()
    assert {"vae-unet-single", "baseline-1h-cpu-single", "tiny-cpu"} <= set(names)
    assert TrainConfig.from_file("vae-unet-single") == TrainConfig.from_file(
        MODELS / "vae-unet-single.json"
    )
    assert shipped_config("tiny-cpu") == TrainConfig.from_file(MODELS / "tiny-cpu.json")
    with pytest.raises(FileNotFoundError, match="shipped: baseline-1h-cpu-earlier"):
        shipped_config("nope")
    with pytest.raises(FileNotFoundError, match=r"shipped configurations: .*vae-unet-single"):
        TrainConfig.from_file("nope.json")
