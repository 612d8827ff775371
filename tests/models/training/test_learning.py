"""The reference model learns on a CPU: the decoded density is a density, not an empty grid.

Two ways the chain failed to learn before: a ReLU output whose every voxel went below zero (no
gradient ever again), and a joint loss met by a decoded "density" shrunk towards zero while the
U-Net's BatchNorm rescaled it. Both end with a reconstruction error at the level of an all-zero
grid; these tests fail if that comes back.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crystalgrid.models.checkpoint import load_checkpoint  # noqa: E402
from crystalgrid.models.training.loop import train  # noqa: E402


def _reconstruct(checkpoint, density: np.ndarray) -> np.ndarray:
    ckpt = load_checkpoint(checkpoint)
    recon, _ = ckpt.model.reconstruct(torch.from_numpy(density))
    return recon.numpy()


@pytest.fixture(scope="module")
def learnt(make_view, tmp_path_factory):
    """A tiny model trained for 60 steps on 8 grids of 1-4 O/Fe atoms (~15 s on one core)."""
    from crystalgrid.models.config import TrainConfig

    view = make_view(8, seed=3)
    config = TrainConfig(
        latent_dim=16,
        encoder_channels=(4, 4, 8, 8),
        decoder_channels=(8, 8, 4),
        unet_base_channels=4,
        unet_levels=2,
        lr=2e-3,
        batch_size=4,
        beta=1e-4,
        epochs=30,
        device="cpu",
        precision="fp32",
        log_every=2,
        prefetch=0,
    )
    out = tmp_path_factory.mktemp("learnt")
    return view, train(config, view, None, out_dir=out, quiet=True)


def test_reconstruction_beats_the_empty_grid(learnt):
    view, checkpoint = learnt
    density = view[0 : len(view)]["density"]
    recon = _reconstruct(checkpoint, density)
    empty = float(np.mean(density**2))  # the error of an all-zero "reconstruction"
    error = float(np.mean((recon - density) ** 2))
    print(f"voxel MSE {error:.4g} vs all-zero {empty:.4g}")
    assert error < 0.5 * empty
    # Not a collapsed output: the decoded peaks are a sizeable part of the true ones.
    peaks = recon.reshape(len(recon), -1).max(axis=1)
    true_peaks = density.reshape(len(density), -1).max(axis=1)
    assert np.all(peaks > 0.2 * true_peaks), (peaks, true_peaks)
    # And where the true density is empty, the decoded one is small.
    far = density < 1e-3 * density.max()
    assert float(np.mean(recon[far])) < 0.05 * float(np.mean(density[~far]))


def test_the_output_still_learns(learnt):
    """After training, the reconstruction error still sends gradient into the last layer
    (a dead ReLU output sends exactly none)."""
    view, checkpoint = learnt
    vae = load_checkpoint(checkpoint).model.vae.train()
    assert isinstance(vae.decoder[-1], torch.nn.Softplus)
    x = torch.from_numpy(view[0:4]["density"]).unsqueeze(1)
    recon, _, _ = vae(x, sample=False)
    torch.nn.functional.mse_loss(recon, x).backward()
    last = vae.decoder[-2]
    assert float(last.weight.grad.abs().max()) > 1e-6
    assert float(last.bias.grad.abs()) > 1e-6
