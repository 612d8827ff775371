"""Training speed on this machine: stage rates measured, and a run's time predicted from them."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from crystalgrid.models.runtime import cpu_capability, resolve_runtime  # noqa: E402
from crystalgrid.models.training.speed import (  # noqa: E402
    StageRates,
    expected_training_seconds,
    measure_stage_rates,
    stage_steps,
    synthetic_batch,
)


def test_synthetic_batch_is_a_density_with_its_species():
    density, species = synthetic_batch(3, 30, (8, 26), torch.device("cpu"), atoms=2)
    assert density.shape == species.shape == (3, 30, 30, 30)
    assert density.dtype == torch.float32 and species.dtype == torch.uint8
    assert float(density.min()) >= 0
    # A Gaussian of sigma 1 Å peaks at Z / (2 pi)^1.5 Å^-3: an atom of Z <= 26 stays below it
    # twice over (two atoms may overlap).
    assert float(density.max()) <= 2 * 26 * (2 * torch.pi) ** -1.5 + 1e-6
    assert set(torch.unique(species).tolist()) <= {0, 8, 26}
    assert (species > 0).any()


def test_stage_rates_of_a_staged_and_a_joint_config(tiny_config):
    runtime = resolve_runtime("cpu", "fp32")
    staged = measure_stage_rates(
        tiny_config.with_overrides(vae_stage=0.5),
        n_classes=3,
        batch_size=2,
        steps=1,
        runtime=runtime,
    )
    assert set(staged.rates) == {"vae", "unet"} and all(r > 0 for r in staged.rates.values())
    assert staged.precision == "fp32" and staged.cpu_capability == cpu_capability()
    assert staged.to_dict()["samples_per_s"] == staged.rates
    joint = measure_stage_rates(tiny_config, n_classes=3, batch_size=2, steps=1)
    assert set(joint.rates) == {"joint"} and joint.batch_size == 2


def test_expected_seconds_add_each_stage_at_its_rate(tiny_config):
    config = tiny_config.with_overrides(vae_stage=0.5, batch_size=8)
    rates = StageRates({"vae": 16.0, "unet": 2.0}, "cpu (AVX2), fp32, eager", "fp32", "AVX2", 8, 2)
    assert stage_steps(config, 100) == {"vae": 50, "unet": 50}
    # 50 steps of 8 at 16/s, then 50 of 8 at 2/s.
    assert expected_training_seconds(config, rates, total_steps=100) == pytest.approx(225.0)
    # Resumed at step 60: the VAE stage is done, 40 U-Net steps are left.
    assert stage_steps(config, 100, done=60) == {"vae": 0, "unet": 40}
    assert expected_training_seconds(config, rates, total_steps=100, done=60) == 160.0
    joint = StageRates({"joint": 4.0}, "", "fp32", "AVX2", 8, 2)
    assert expected_training_seconds(tiny_config, joint, total_steps=10) == 10 * 4 / 4.0
