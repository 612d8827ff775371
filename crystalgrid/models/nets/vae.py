"""The paper's beta-VAE for density grids (Hoffmann et al. 2019, appendix E).

Encoder: Conv3d k5 s2 (16 channels), k3 s1 (32), k3 s1 (64), k3 s2 (128), each followed by
BatchNorm and LeakyReLU, with "same"-style padding ``k // 2`` (30^3 -> 15 -> 15 -> 15 -> 8^3),
then two fully connected layers to the mean and log-variance of the latent (300).

Decoder: a fully connected layer to 128 x 5 x 5 x 5, then [trilinear x2, Conv3d 64 k5,
LeakyReLU], [x2, Conv3d 32 k5, LeakyReLU], [x2, Conv3d 16 k4, LeakyReLU], Conv3d 1 k4,
then a non-negative output activation. Upsampling + convolution, not transposed convolutions.
The paper's output is a ReLU; the default here is a softplus (``output="softplus"``),
because almost every voxel of a density grid is ~0, and a ReLU decoder that pushes a voxel
below zero gets no gradient there again: on CPU runs the whole output went to exactly 0 (an
all-zero "reconstruction") within 150 steps. ``output="relu"`` keeps the paper's choice.

The paper does not state the paddings; they are the choice closest to "same" that lands
exactly on the grid size (:func:`decoder_paddings`), for 30 bins: 5 -> 10 -> (k5, pad 1) 8
-> 16 -> (k5, pad 2) 16 -> 32 -> (k4, pad 1) 31 -> (k4, pad 1) 30.

Conditional mode (appendix G.1): with ``conditional=True`` the bottleneck's input (the
flattened encoder features) and its output (the latent vector fed to the decoder) are
multiplied by a per-sample scalar ``c`` (the trainer passes the sample's largest density).

Latent kinds: ``latent="dense"`` (the paper's) flattens the encoder's 128 x 8^3 features into
fully connected layers to ``latent_dim`` numbers and back to 128 x 5^3. ``latent="conv"``
keeps the latent on the encoder's 8^3 grid: a 1x1x1 convolution gives ``latent_dim / 8^3``
channels of mean and log-variance per cell (each cell covers ~1.3 Å of a 10 Å box), and the
decoder enters its path where it is 8^3 (a 3x3x3 convolution to its first channels, then the
last two upsamplings). A local latent suits grids dense with atoms (repeated crops): each cell
describes its neighbourhood instead of every number describing the whole grid. The latent is
still ``(B, latent_dim)`` everywhere outside this module (flattened channels x cells).

In every mode the log-variance is bounded to ``[LOGVAR_MIN, LOGVAR_MAX]`` = [-30, 2], softly
at the top (without it, training diverged; see :meth:`VAE.encode`).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

__all__ = ["LATENT_KINDS", "VAE", "decoder_paddings", "kl_divergence"]

_ENC_KERNELS = (5, 3, 3, 3)
_ENC_STRIDES = (2, 1, 1, 2)
_DEC_KERNELS = (5, 5, 4, 4)

#: The decoder's last activation: ``"softplus"`` (default; its slope decays smoothly below
#: zero instead of dropping to 0) or ``"relu"`` (the paper's; its gradient is zero for every
#: voxel below zero, see the module docstring).
OUTPUT_ACTIVATIONS = ("softplus", "relu")
#: Sharpness of the softplus output, ``log(1 + exp(b x)) / b``: empty voxels reach ~1e-3 of
#: an oxygen peak at ``x = -0.5``, and above ~0.5 it is the identity to within 1e-3.
SOFTPLUS_BETA = 10.0

#: The bottleneck's kinds (see the module docstring).
LATENT_KINDS = ("dense", "conv")

#: Bounds of the conditional VAE's log-variance (see :meth:`VAE.encode`).
LOGVAR_MIN, LOGVAR_MAX = -30.0, 2.0


def _upsample() -> nn.Upsample:
    """The decoder's x2 trilinear upsampling."""
    return nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def decoder_paddings(bins: int) -> tuple[int, tuple[int, int, int, int]]:
    """The decoder's start size and the four convolution paddings that give ``bins`` out.

    The start size is ``round(bins / 6)`` (5 for 30 bins). Among symmetric paddings
    ``0 <= p < kernel`` the one closest to "same" padding wins (ties: the lexicographically
    smallest), so the choice is deterministic.

    Args:
        bins: voxels per axis of the grid to produce.

    Returns:
        ``(start, (p1, p2, p3, p4))``.

    Raises:
        ValueError: if no padding maps the start size to ``bins``.
    """
    start = max(1, round(bins / 6))
    best: tuple[float, tuple[int, ...]] | None = None
    for pads in itertools.product(*(range(k) for k in _DEC_KERNELS)):
        size = start
        for i, (k, p) in enumerate(zip(_DEC_KERNELS, pads, strict=True)):
            if i < 3:
                size *= 2
            size = _conv_out(size, k, 1, p)
            if size < 1:
                break
        if size != bins:
            continue
        cost = sum(abs(p - (k - 1) / 2) for k, p in zip(_DEC_KERNELS, pads, strict=True))
        if best is None or (cost, pads) < best:
            best = (cost, pads)
    if best is None:
        raise ValueError(
            f"the paper's decoder (x2 upsampling three times from {start}^3, kernels "
            f"{_DEC_KERNELS}) cannot produce a {bins}^3 grid with any padding; use bins "
            "near a multiple of 6 (e.g. 24, 30, 36)"
        )
    return start, best[1]  # type: ignore[return-value]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over latent dims and averaged over the batch.

    Args:
        mu, logvar: ``(B, latent)``.

    Returns:
        A scalar tensor (nats per sample), computed in float32.
    """
    mu = mu.float()
    logvar = logvar.float()
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


class VAE(nn.Module):
    """The beta-VAE over ``(B, 1, bins, bins, bins)`` density grids.

    Args:
        bins: voxels per axis (30 in the paper).
        latent_dim: latent size (300 in the paper).
        encoder_channels: channels of the four encoder convolutions.
        decoder_channels: channels of the three upsampling convolutions.
        conditional: multiply the bottleneck input and output by a per-sample scalar.
        output: the last activation, ``"softplus"`` or ``"relu"`` (see the module docstring).
        input_norm: BatchNorm after the first convolution (the paper's); ``False`` keeps the
            absolute amplitudes of each sample (an identity in its place, so the parameter
            names do not move).
        latent: ``"dense"`` (the paper's fully connected bottleneck) or ``"conv"`` (a latent
            grid on the encoder's cells; ``latent_dim`` a multiple of their number, 512 for
            30 bins).

    Raises:
        ValueError: for a grid size the encoder or decoder cannot map, or a conv latent
            size that is not a whole number of channels.
    """

    def __init__(
        self,
        *,
        bins: int = 30,
        latent_dim: int = 300,
        encoder_channels: tuple[int, ...] = (16, 32, 64, 128),
        decoder_channels: tuple[int, ...] = (64, 32, 16),
        conditional: bool = False,
        output: str = "softplus",
        input_norm: bool = True,
        latent: str = "dense",
    ) -> None:
        super().__init__()
        if output not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output must be one of {OUTPUT_ACTIVATIONS}, got {output!r}")
        if latent not in LATENT_KINDS:
            raise ValueError(f"latent must be one of {LATENT_KINDS}, got {latent!r}")
        self.bins = bins
        self.latent_dim = latent_dim
        self.conditional = conditional
        self.latent = latent

        layers: list[nn.Module] = []
        size, c_in = bins, 1
        for i, (c_out, k, s) in enumerate(
            zip(encoder_channels, _ENC_KERNELS, _ENC_STRIDES, strict=True)
        ):
            norm = nn.BatchNorm3d(c_out) if i > 0 or input_norm else nn.Identity()
            layers += [
                nn.Conv3d(c_in, c_out, k, stride=s, padding=k // 2),
                norm,
                nn.LeakyReLU(0.01),
            ]
            size, c_in = _conv_out(size, k, s, k // 2), c_out
        if size < 1:
            raise ValueError(f"the encoder cannot map a {bins}^3 grid")
        self.encoder = nn.Sequential(*layers)
        self.feature_shape = (c_in, size, size, size)
        start, pads = decoder_paddings(bins)
        self.start = start
        c0 = encoder_channels[-1]
        c1, c2, c3 = decoder_channels
        if latent == "dense":
            n_features = c_in * size**3
            self.fc_mu: nn.Module = nn.Linear(n_features, latent_dim)
            self.fc_logvar: nn.Module = nn.Linear(n_features, latent_dim)
            self.fc_dec: nn.Module = nn.Linear(latent_dim, c0 * start**3)
            self._dec_shape = (c0, start, start, start)
            entry: list[nn.Module] = [
                _upsample(),
                nn.Conv3d(c0, c1, _DEC_KERNELS[0], padding=pads[0]),
            ]
        else:
            # The decoder is at this size after its first upsampling and convolution.
            entry_size = _conv_out(2 * start, _DEC_KERNELS[0], 1, pads[0])
            cells = size**3
            if entry_size != size or latent_dim % cells:
                raise ValueError(
                    f"a conv latent needs the encoder's {size}^3 cells to meet the decoder's "
                    f"{entry_size}^3 and latent_dim a multiple of {cells}; got {latent_dim}"
                )
            channels = latent_dim // cells
            self.fc_mu = nn.Conv3d(c_in, channels, 1)
            self.fc_logvar = nn.Conv3d(c_in, channels, 1)
            self.fc_dec = nn.Conv3d(channels, c1, 3, padding=1)
            self._dec_shape = (channels, size, size, size)
            entry = []
        self.decoder = nn.Sequential(
            *entry,
            nn.LeakyReLU(0.01),
            _upsample(),
            nn.Conv3d(c1, c2, _DEC_KERNELS[1], padding=pads[1]),
            nn.LeakyReLU(0.01),
            _upsample(),
            nn.Conv3d(c2, c3, _DEC_KERNELS[2], padding=pads[2]),
            nn.LeakyReLU(0.01),
            nn.Conv3d(c3, 1, _DEC_KERNELS[3], padding=pads[3]),
            nn.ReLU() if output == "relu" else nn.Softplus(beta=SOFTPLUS_BETA),
        )
        if output == "relu":
            # With PyTorch's default init the last convolution's output is dominated by its
            # bias (+-0.02, the rest ~0.003), so for about half of all seeds every voxel
            # starts below zero and the ReLU passes no gradient at all. A small positive bias
            # starts every voxel alive, but training can still push a voxel below zero for
            # good, and most voxels of a density grid are near zero: on a CPU run the whole
            # output died within 150 steps. The softplus default has no flat side at zero.
            last = self.decoder[-2]
            assert isinstance(last, nn.Conv3d) and last.bias is not None
            nn.init.constant_(last.bias, 0.01)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The latent's layout: ``(channels, size, size, size)`` for a latent grid,
        ``(latent_dim,)`` for the dense bottleneck."""
        return tuple(self._dec_shape) if self.latent == "conv" else (self.latent_dim,)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or tuple(x.shape[1:]) != (1, self.bins, self.bins, self.bins):
            raise ValueError(
                f"expected (B, 1, {self.bins}, {self.bins}, {self.bins}), got {tuple(x.shape)}"
            )

    def _condition(self, h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if not self.conditional:
            return h
        if c is None:
            raise ValueError("a conditional VAE needs the condition c (one scalar per sample)")
        return h * c.reshape(-1, 1).to(h.dtype)

    def encode(
        self, x: torch.Tensor, c: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters of a batch of grids.

        Args:
            x: ``(B, 1, bins, bins, bins)`` scaled density.
            c: ``(B,)`` condition (conditional mode only).

        Returns:
            ``(mu, logvar)``, each ``(B, latent_dim)``; ``logvar`` bounded to
            ``[LOGVAR_MIN, LOGVAR_MAX]`` (softly at the top).
        """
        self._check(x)
        h = self.encoder(x)
        if self.latent == "conv":
            h = self._condition(h.flatten(1), c).reshape(h.shape)
            mu, logvar = self.fc_mu(h).flatten(1), self.fc_logvar(h).flatten(1)
            return self._bounded(mu, logvar)
        h = self._condition(h.flatten(1), c)
        if h.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # torch 2.13's CPU bf16 GEMM dies with SIGFPE for an inner dimension of exactly
            # 65,536, which is the paper's 128 x 8^3 features: keep this layer in fp32 on CPU.
            with torch.autocast("cpu", enabled=False):
                h = h.float()
                mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        else:
            mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        return self._bounded(mu, logvar)

    @staticmethod
    def _bounded(mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` with the log-variance bounded to ``[LOGVAR_MIN, LOGVAR_MAX]``."""
        # One optimiser step can move the log-variance by tens (the paper's bottleneck sums
        # 65,536 features; a condition scales them by up to ~6 more): exp(logvar) then
        # overflows the KL term and the draw, and the decoder, fed huge latents, dies (seen
        # at the paper's width with lr 1e-3: KL 1e12 within 50 steps, then an all-zero
        # output). A posterior wider than the prior (logvar > LOGVAR_MAX) is never useful;
        # below LOGVAR_MIN the draw is exact. The upper bound is soft (a sharp softplus,
        # within 0.01 of the identity below 0) so a dimension pushed past it still gets gradient.
        logvar = LOGVAR_MAX - F.softplus(LOGVAR_MAX - logvar.float(), beta=2.0)
        return mu, logvar.clamp(min=LOGVAR_MIN)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, 1)``; ``(B, latent_dim)``."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Grids from latent vectors.

        Args:
            z: ``(B, latent_dim)``.
            c: ``(B,)`` condition (conditional mode only).

        Returns:
            ``(B, 1, bins, bins, bins)`` non-negative scaled density.
        """
        z = self._condition(z, c)
        if self.latent == "conv":
            return self.decoder(self.fc_dec(z.reshape(-1, *self._dec_shape)))
        h = self.fc_dec(z).reshape(-1, *self._dec_shape)
        return self.decoder(h)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor | None = None, *, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, draw (or take the mean when ``sample=False``) and decode.

        Returns:
            ``(reconstruction (B, 1, bins, bins, bins), mu, logvar)``.
        """
        mu, logvar = self.encode(x, c)
        z = self.reparameterize(mu, logvar) if sample else mu
        return self.decode(z, c), mu, logvar

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
