"""A 3-D U-Net with additive attention gates (Oktay et al. 2018) that segments density grids.

The grid is zero-padded to the next multiple of ``2^levels`` (30 -> 32 for 4 levels; zero is
"no density", the value outside the box) and the logits are cropped back, so every voxel of
the input gets one logit per class. Class 0 is "no atom"; class ``i > 0`` is the ``i``-th
atomic number of the run's class map (see :class:`crystalgrid.models.nets.classes.ClassMap`).

Each level has two Conv3d k3 + BatchNorm + ReLU; the coarser level's features gate the skip
connection (theta: k2 s2 convolution of the skip, phi: 1x1 of the gate, ReLU, 1x1 to one
channel, sigmoid, trilinear upsampling of the coefficients back to the skip's size), and the
decoder upsamples trilinearly followed by a k3 convolution, then concatenates the gated skip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

__all__ = ["BACKGROUND_PRIOR", "AttentionGate", "AttentionUNet3D"]

#: The initial probability of "no atom" at every voxel (the head's bias starts there).
BACKGROUND_PRIOR = 0.99


class _DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, *, first_norm: bool = True) -> None:
        super().__init__(
            nn.Conv3d(c_in, c_out, 3, padding=1, bias=not first_norm),
            nn.BatchNorm3d(c_out) if first_norm else nn.Identity(),
            nn.ReLU(inplace=True),
            nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True),
        )


class _UpConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
            nn.Conv3d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True),
        )


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, grid attention with sub-sampling 2).

    Args:
        skip_channels: channels of the skip connection ``x`` (fine level).
        gate_channels: channels of the gating signal ``g`` (one level coarser).
        inter_channels: channels of the intermediate space.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.theta = nn.Conv3d(skip_channels, inter_channels, 2, stride=2, bias=False)
        self.phi = nn.Conv3d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv3d(inter_channels, 1, 1)
        self.out = nn.Sequential(
            nn.Conv3d(skip_channels, skip_channels, 1), nn.BatchNorm3d(skip_channels)
        )

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Gate ``x`` (B, Cx, 2n, 2n, 2n) with ``g`` (B, Cg, n, n, n); returns x's shape."""
        f = F.relu(self.theta(x) + self.phi(g))
        alpha = torch.sigmoid(self.psi(f))
        alpha = F.interpolate(alpha, size=x.shape[2:], mode="trilinear", align_corners=False)
        return self.out(x * alpha)


class AttentionUNet3D(nn.Module):
    """Attention U-Net over ``(B, 1, n, n, n)`` grids, logits ``(B, n_classes, n, n, n)``.

    Args:
        n_classes: number of classes, "no atom" included.
        base_channels: channels at the finest level; doubled per level.
        levels: number of 2x poolings (the bottleneck is ``levels`` poolings down).
        attention: gate the skip connections (``False``: a plain U-Net, for ablations).
        input_norm: BatchNorm after the first convolution; ``False`` keeps each sample's
            absolute amplitudes (which carry Z) instead of normalising them by its batch's.
        background_prior: the probability of "no atom" the head starts at, every voxel.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        base_channels: int = 16,
        levels: int = 4,
        attention: bool = True,
        input_norm: bool = True,
        background_prior: float = BACKGROUND_PRIOR,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a segmenter needs at least 2 classes, got {n_classes}")
        self.n_classes = n_classes
        self.levels = levels
        ch = [base_channels * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList([_DoubleConv(1, ch[0], first_norm=input_norm)])
        self.down.extend(_DoubleConv(ch[i - 1], ch[i]) for i in range(1, levels + 1))
        self.ups = nn.ModuleList(_UpConv(ch[i + 1], ch[i]) for i in range(levels))
        self.gates = nn.ModuleList(
            AttentionGate(ch[i], ch[i + 1], max(1, ch[i] // 2)) if attention else nn.Identity()
            for i in range(levels)
        )
        self.merge = nn.ModuleList(_DoubleConv(2 * ch[i], ch[i]) for i in range(levels))
        self.head = nn.Conv3d(ch[0], n_classes, 1)
        # Start from the prior, not from uniform: almost every voxel is "no atom" (~99.7%),
        # so the first steps learn where atoms are instead of first learning that they are rare.
        bias = self.head.bias
        assert bias is not None
        with torch.no_grad():
            bias.zero_()
            odds = background_prior / (1 - background_prior)
            bias[0] = math.log(odds * (n_classes - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits per class and voxel.

        Args:
            x: ``(B, 1, n, n, n)`` scaled density (any ``n``).

        Returns:
            ``(B, n_classes, n, n, n)`` unnormalised logits.
        """
        n = x.shape[2:]
        mult = 2**self.levels
        pads: list[int] = []
        for size in reversed(n):  # F.pad wants the last axis first
            total = -size % mult
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        skips = []
        h = x
        for i, block in enumerate(self.down):
            if i > 0:
                h = F.max_pool3d(h, 2)
            h = block(h)
            skips.append(h)
        h = skips.pop()
        for i in reversed(range(self.levels)):
            skip = skips[i]
            gated = skip if isinstance(self.gates[i], nn.Identity) else self.gates[i](skip, h)
            h = self.merge[i](torch.cat([gated, self.ups[i](h)], dim=1))
        if any(pads):
            # The head is per voxel (1x1x1): cropping its few input channels first costs less
            # than cropping one logit per class, forward and backward alike.
            h = h[
                :,
                :,
                pads[4] : pads[4] + n[0],
                pads[2] : pads[2] + n[1],
                pads[0] : pads[0] + n[2],
            ]
        return self.head(h)

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
