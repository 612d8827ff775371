"""A trained model on numpy grids: reconstructions (posterior means) and their segmentation.

For pictures and reports, which hold numpy arrays: each function takes a checkpoint (a path,
a shipped name or a loaded :class:`~crystalgrid.models.checkpoint.Checkpoint`), runs the
model where the checkpoint's networks are, and returns numpy arrays on the CPU. The scorers
(:mod:`crystalgrid.models.scoring`) and the latent tools run the model themselves, batched
under a :class:`~crystalgrid.models.runtime.Runtime`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from crystalgrid.models.checkpoint import Checkpoint, as_checkpoint

__all__ = ["reconstruct_batch", "reconstruct_one"]


def _reconstruct(
    checkpoint: str | Path | Checkpoint, density: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(reconstructions (B, n, n, n) float32 Å^-3, atomic numbers (B, n, n, n) uint8)`` of
    grids ``(B, n, n, n)`` Å^-3."""
    ckpt = as_checkpoint(checkpoint)
    model = ckpt.model.eval()
    d = torch.from_numpy(np.ascontiguousarray(density, dtype=np.float32))
    recon, species = model.reconstruct(d.to(next(model.parameters()).device))
    return recon.float().cpu().numpy(), species.to(torch.uint8).cpu().numpy()


def reconstruct_one(
    checkpoint: str | Path | Checkpoint, density: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruction (posterior mean) and segmentation of one grid, for
    :func:`~crystalgrid.models.plots.show_sample`.

    Args:
        checkpoint: a path, a shipped name or a loaded checkpoint.
        density: ``(B, B, B)`` Å^-3.

    Returns:
        ``(reconstruction (B, B, B) float32 Å^-3, atomic number per voxel (B, B, B) uint8)``.
    """
    recon, species = _reconstruct(checkpoint, np.asarray(density)[None])
    return recon[0], species[0]


def reconstruct_batch(checkpoint: str | Path | Checkpoint, density: np.ndarray) -> np.ndarray:
    """Reconstructions (posterior means) of a batch of grids ``(B, n, n, n)`` Å^-3, float32."""
    return _reconstruct(checkpoint, density)[0]
