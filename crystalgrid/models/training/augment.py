"""The 48 symmetries of the cube, applied to training batches of grids.

A grid of voxel centres over a cube is mapped onto itself by every permutation of the three
axes (6) combined with a flip of any of them (8): 48 maps, each sending every voxel centre onto
a voxel centre. The density of a sample so mapped is exactly the density of its atoms mapped
the same way, and the species grid likewise, so these augmentations add no interpolation error
and never move an atom off its label. (A mirror image of a crystal is a crystal of the same
composition and the same distances: the reconstruction task does not change.)

:func:`cube_symmetries` draws one map per sample from a seed and a step, so a resumed run
draws the same maps as an uninterrupted one.
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["N_CUBE_SYMMETRIES", "apply_cube_symmetry", "cube_symmetries"]

#: The six orders of the three spatial axes.
_PERMUTATIONS = tuple(itertools.permutations(range(3)))
#: How many maps :func:`apply_cube_symmetry` knows: 6 axis orders x 8 flip patterns.
N_CUBE_SYMMETRIES = 48


def cube_symmetries(batch_size: int, *, seed: int, step: int) -> torch.Tensor:
    """One symmetry index in ``[0, 48)`` per sample, ``(batch_size,)`` int64 on the CPU.

    The draw depends only on ``seed`` and ``step``.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(N_CUBE_SYMMETRIES, (batch_size,), generator=generator)


def apply_cube_symmetry(grids: torch.Tensor, symmetry: torch.Tensor) -> torch.Tensor:
    """Map each grid of a batch by its symmetry.

    Args:
        grids: ``(B, n, n, n)`` (any dtype, any device); the last three axes are x, y, z.
        symmetry: ``(B,)`` indices in ``[0, 48)``: ``index // 8`` picks the axis order
            (``itertools.permutations`` order), bits 0-2 of ``index % 8`` flip x, y, z after it.

    Returns:
        A new ``(B, n, n, n)`` tensor; index 0 is the identity.
    """
    if grids.dim() != 4 or len(symmetry) != len(grids):
        raise ValueError(
            f"expected grids (B, n, n, n) and one symmetry per grid, got {tuple(grids.shape)} "
            f"and {tuple(symmetry.shape)}"
        )
    symmetry = symmetry.to(grids.device)
    order, flips = symmetry // 8, symmetry % 8
    out = grids
    for k, perm in enumerate(_PERMUTATIONS[1:], start=1):
        chosen = (order == k).view(-1, 1, 1, 1)
        out = torch.where(chosen, grids.permute(0, *(1 + a for a in perm)), out)
    for axis in range(3):
        chosen = ((flips >> axis) & 1).bool().view(-1, 1, 1, 1)
        out = torch.where(chosen, out.flip(axis + 1), out)
    return out
