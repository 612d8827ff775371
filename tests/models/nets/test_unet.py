"""The attention U-Net: 30^3 in, one logit per class and voxel out."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from crystalgrid.models.nets.unet import AttentionGate, AttentionUNet3D  # noqa: E402


def test_paper_size_unet_on_30_cubed():
    torch.manual_seed(0)
    unet = AttentionUNet3D(85).eval()  # "no atom" + 84 species, base 16, 4 levels
    with torch.no_grad():
        logits = unet(torch.rand(1, 1, 30, 30, 30))
    assert logits.shape == (1, 85, 30, 30, 30)
    assert 6_000_000 < unet.n_parameters() < 7_500_000


@pytest.mark.parametrize("shape", [(30, 30, 30), (13, 30, 7), (16, 16, 16)])
def test_any_grid_size_is_padded_and_cropped_back(shape):
    unet = AttentionUNet3D(3, base_channels=2, levels=2).eval()
    with torch.no_grad():
        assert unet(torch.rand(2, 1, *shape)).shape == (2, 3, *shape)


def test_plain_unet_without_gates():
    unet = AttentionUNet3D(4, base_channels=2, levels=3, attention=False).eval()
    with torch.no_grad():
        assert unet(torch.rand(1, 1, 30, 30, 30)).shape == (1, 4, 30, 30, 30)


def test_gate_keeps_the_skip_shape_and_bounds_its_coefficients():
    gate = AttentionGate(4, 8, 2).eval()
    x, g = torch.rand(2, 4, 8, 8, 8), torch.rand(2, 8, 4, 4, 4)
    with torch.no_grad():
        assert gate(x, g).shape == x.shape


def test_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        AttentionUNet3D(1)


@pytest.mark.parametrize("prior", [0.99, 0.97])
def test_the_head_starts_at_its_background_prior(prior):
    """Before any training, every voxel's probability of "no atom" is the configured prior."""
    torch.manual_seed(0)
    net = AttentionUNet3D(5, base_channels=4, levels=2, background_prior=prior)
    probs = torch.softmax(net(torch.zeros(1, 1, 12, 12, 12)), dim=1)
    assert probs[:, 0].mean().item() == pytest.approx(prior, abs=0.02)
