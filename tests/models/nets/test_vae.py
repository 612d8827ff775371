"""The paper's beta-VAE: shapes for 30^3 grids, paddings, KL, conditional mode."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from crystalgrid.models.nets.vae import VAE, decoder_paddings, kl_divergence  # noqa: E402

TINY = {"latent_dim": 4, "encoder_channels": (2, 2, 2, 2), "decoder_channels": (2, 2, 2)}


def test_paper_vae_shapes_for_30_cubed():
    torch.manual_seed(0)
    vae = VAE()  # the paper's sizes
    x = torch.rand(2, 1, 30, 30, 30)
    with torch.no_grad():
        recon, mu, logvar = vae(x)
    assert recon.shape == (2, 1, 30, 30, 30)
    assert mu.shape == logvar.shape == (2, 300)
    assert (recon >= 0).all()  # final ReLU
    assert vae.feature_shape == (128, 8, 8, 8)
    # 45.7 M parameters, almost all in the two 65,536 -> 300 layers.
    assert 45_000_000 < vae.n_parameters() < 46_500_000


def test_decoder_paddings_land_on_the_grid():
    assert decoder_paddings(30) == (5, (1, 2, 1, 1))
    for bins in (12, 24, 30, 36):
        vae = VAE(bins=bins, **TINY)
        with torch.no_grad():
            assert vae.decode(torch.zeros(1, 4)).shape == (1, 1, bins, bins, bins)


def test_unmappable_grid_size_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot produce a 3"):
        decoder_paddings(3)


def test_wrong_input_shape_is_rejected():
    vae = VAE(**TINY)
    with pytest.raises(ValueError, match=r"expected \(B, 1, 30, 30, 30\)"):
        vae.encode(torch.zeros(1, 30, 30, 30))


def test_latent_size_is_configurable_and_mean_decoding_is_deterministic():
    vae = VAE(latent_dim=7, encoder_channels=(2, 2, 4, 4), decoder_channels=(4, 2, 2)).eval()
    x = torch.rand(3, 1, 30, 30, 30)
    with torch.no_grad():
        a, mu, _ = vae(x, sample=False)
        b, _, _ = vae(x, sample=False)
    assert mu.shape == (3, 7)
    assert torch.equal(a, b)


def test_kl_divergence_known_values():
    zero = torch.zeros(4, 5)
    assert kl_divergence(zero, zero).item() == pytest.approx(0.0)
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dimension, summed over 3 dims.
    assert kl_divergence(torch.ones(2, 3), torch.zeros(2, 3)).item() == pytest.approx(1.5)


def test_conditional_mode_scales_the_bottleneck():
    torch.manual_seed(0)
    vae = VAE(conditional=True, **TINY)
    vae.eval()
    x = torch.rand(2, 1, 30, 30, 30)
    with pytest.raises(ValueError, match="needs the condition"):
        vae.encode(x)
    with torch.no_grad():
        mu1, _ = vae.encode(x, torch.ones(2))
        mu0, _ = vae.encode(x, torch.zeros(2))
        # c = 0 zeroes the bottleneck input: mu is the layer's bias alone.
        assert torch.allclose(mu0, vae.fc_mu.bias.expand(2, -1))
        assert not torch.allclose(mu1, mu0)
        z = torch.randn(2, 4)
        two = vae.decode(z, torch.full((2,), 2.0))
        assert not torch.allclose(two, vae.decode(z, torch.ones(2)))


def test_paper_vae_under_cpu_bf16_autocast_does_not_crash():
    # torch's CPU bf16 GEMM raises SIGFPE for K = 65,536 (the paper's bottleneck input); run
    # in a child process so a regression fails this test instead of killing the session.
    import subprocess
    import sys

    # Only the bottleneck is under test: a one-layer stand-in makes the encoder's 128 x 8^3
    # features, so the test takes as long on a CPU that emulates bf16 as on one that has it.
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from crystalgrid.models.nets.vae import VAE\n"
        "v = VAE()\n"
        "v.encoder = torch.nn.Conv3d(1, 128, 1, stride=4)\n"
        "with torch.autocast('cpu', dtype=torch.bfloat16):\n"
        "    mu, lv = v.encode(torch.rand(2, 1, 30, 30, 30))\n"
        "(mu.float().mean() + lv.float().mean()).backward()\n"
        "assert mu.shape == (2, 300)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])


def test_conv_latent_is_a_grid_of_cells_flattened_to_latent_dim():
    torch.manual_seed(0)
    vae = VAE(
        latent="conv", latent_dim=2 * 512, **{k: v for k, v in TINY.items() if k != "latent_dim"}
    )
    vae.eval()
    x = torch.rand(2, 1, 30, 30, 30)
    with torch.no_grad():
        recon, mu, logvar = vae(x, sample=False)
        assert recon.shape == x.shape and mu.shape == logvar.shape == (2, 1024)
        assert vae.decode(torch.randn(3, 1024)).shape == (3, 1, 30, 30, 30)
        # Local: a change in one corner of the grid leaves the far corner's cells alone.
        y = x.clone()
        y[:, :, :6, :6, :6] += 5.0
        mu_y, _ = vae.encode(y)
        cells = mu.reshape(2, 2, 8, 8, 8)
        cells_y = mu_y.reshape(2, 2, 8, 8, 8)
        assert not torch.allclose(cells[..., 0, 0, 0], cells_y[..., 0, 0, 0])
        assert torch.allclose(cells[..., 4:, 4:, 4:], cells_y[..., 4:, 4:, 4:])


def test_conv_latent_size_must_fill_whole_channels():
    with pytest.raises(ValueError, match="multiple of 512"):
        VAE(latent="conv", latent_dim=300)
    with pytest.raises(ValueError, match="latent must be one of"):
        VAE(latent="sparse")


def test_the_dense_latent_keeps_its_parameter_names():
    """Checkpoints written before the conv latent existed still load."""
    names = [k for k in VAE(**TINY).state_dict() if not k.startswith("encoder")]
    layers = ["fc_mu", "fc_logvar", "fc_dec", "decoder.1", "decoder.4", "decoder.7", "decoder.9"]
    assert names == [f"{layer}.{p}" for layer in layers for p in ("weight", "bias")]


def test_a_conv_latent_that_fills_no_whole_channel_is_a_config_error():
    from crystalgrid.errors import ConfigError
    from crystalgrid.models.config import TrainConfig
    from crystalgrid.models.nets.classes import ClassMap
    from crystalgrid.models.nets.model import ReferenceModel

    with pytest.raises(ConfigError, match="multiple of 512"):
        ReferenceModel(TrainConfig(latent_kind="conv", latent_dim=300), 30, ClassMap((8,)))
    with pytest.raises(ConfigError, match="latent_kind must be dense or conv"):
        TrainConfig(latent_kind="sparse")
