"""The joint model (VAE + attention U-Net) and the paper's loss.

``L = MSE(M, M^) + beta KL(q(z|M) || N(0, 1)) + gamma CE(S, U(M^))``

- ``M`` is the scaled density (``density * density_scale``), ``M^`` the VAE's reconstruction;
  MSE is the mean over voxels and samples.
- KL is summed over the latent dimensions and averaged over the batch (nats per sample).
- CE is the cross-entropy of the U-Net's logits on the *reconstruction* against the species
  classes, averaged over voxels and samples; voxels whose species has no class (a species
  absent from the training split) are ignored.

One loss and one Adam optimiser train both networks in the same step. The U-Net's parameters
only see ``gamma * CE``; Adam is invariant to a constant scale of a parameter's gradient, so
this trains the U-Net on CE exactly as the paper's separate ``L_UNet = CE`` would (up to
Adam's epsilon). With ``ce_into_decoder=True`` (the default, the paper's joint training) the
CE's gradient also flows through ``M^`` into the decoder and encoder, pushing reconstructions
towards grids the U-Net can segment; ``False`` detaches ``M^`` first.

Staged training (``TrainConfig.vae_stage``) calls the same forward with ``stage="vae"``
(``MSE + beta KL`` only, the U-Net not run) and then ``stage="unet"`` (the VAE frozen and
evaluated on the posterior mean, the loss ``CE`` alone).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

from crystalgrid.errors import ConfigError
from crystalgrid.models.config import TrainConfig
from crystalgrid.models.nets.classes import ClassMap
from crystalgrid.models.nets.unet import AttentionUNet3D
from crystalgrid.models.nets.vae import VAE, kl_divergence

__all__ = ["IGNORE_INDEX", "ReferenceModel"]

IGNORE_INDEX = -100


class ReferenceModel(nn.Module):
    """The paper's VAE and the attention U-Net, with the loss and the inference helpers.

    Args:
        config: the architecture and loss weights.
        bins: voxels per grid axis.
        class_map: the U-Net's classes.
    """

    # Buffers registered in __init__ (typed here: nn.Module's attribute lookup is untyped).
    class_of_z: torch.Tensor
    z_of_class: torch.Tensor
    class_weights: torch.Tensor

    def __init__(self, config: TrainConfig, bins: int, class_map: ClassMap) -> None:
        super().__init__()
        self.config = config
        self.bins = bins
        self.class_map = class_map
        try:
            self.vae = VAE(
                bins=bins,
                latent_dim=config.latent_dim,
                encoder_channels=config.encoder_channels,
                decoder_channels=config.decoder_channels,
                conditional=config.conditional,
                output=config.output_activation,
                input_norm=config.input_norm,
                latent=config.latent_kind,
            )
        except ValueError as exc:  # a grid size or latent the networks cannot map
            raise ConfigError(str(exc)) from None
        self.unet = AttentionUNet3D(
            class_map.n_classes,
            base_channels=config.unet_base_channels,
            levels=config.unet_levels,
            input_norm=config.input_norm,
            background_prior=config.background_prior,
        )
        lut = torch.from_numpy(class_map.to_classes(np.arange(256), unknown=IGNORE_INDEX))
        self.register_buffer("class_of_z", lut.long(), persistent=False)
        self.register_buffer(
            "z_of_class", torch.from_numpy(class_map.z_of_class.astype("int64")), persistent=False
        )
        self.factorised = config.head == "factorised"
        if self.factorised:
            # Channel 0 is the atom log-odds: start it at the prior of an atom voxel.
            bias = self.unet.head.bias
            assert bias is not None
            with torch.no_grad():
                bias.zero_()
                prior = config.background_prior
                bias[0] = -math.log(prior / (1 - prior))
        weights = torch.full((class_map.n_classes,), float(config.atom_weight))
        weights[0] = 1.0
        self.register_buffer("class_weights", weights, persistent=False)
        self.density_scale = float(config.density_scale)
        self.beta = float(config.beta)
        self.gamma = float(config.gamma)
        self.ce_into_decoder = bool(config.ce_into_decoder)

    # ---- pieces -------------------------------------------------------------------------
    def scale(self, density: torch.Tensor) -> torch.Tensor:
        """Raw density ``(B, n, n, n)`` Å^-3 -> network input ``(B, 1, n, n, n)``."""
        return (density.float() * self.density_scale).unsqueeze(1)

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        """Network grid ``(B, 1, n, n, n)`` -> raw density ``(B, n, n, n)`` Å^-3 (float32)."""
        return x.float().squeeze(1) / self.density_scale

    def condition(self, x: torch.Tensor) -> torch.Tensor | None:
        """The conditional VAE's per-sample scalar: the largest scaled density, ``(B,)``."""
        return x.amax(dim=(1, 2, 3, 4)) if self.config.conditional else None

    def posterior(
        self, density: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The VAE's posterior of raw grids ``(B, n, n, n)`` Å^-3: its mean and log-variance,
        each ``(B, latent_dim)``, and the condition ``(B,)`` (``None`` when unconditional)."""
        x = self.scale(density)
        condition = self.condition(x)
        mu, logvar = self.vae.encode(x, condition)
        return mu, logvar, condition

    def targets(self, species: torch.Tensor) -> torch.Tensor:
        """Species grid ``(B, n, n, n)`` of Z (uint8) -> class indices (int64)."""
        return self.class_of_z[species.long()]

    # ---- training -----------------------------------------------------------------------
    def forward(
        self, density: torch.Tensor, species: torch.Tensor, stage: str = "joint"
    ) -> dict[str, torch.Tensor]:
        """The loss and its terms for one batch.

        Args:
            density: ``(B, n, n, n)`` raw density, Å^-3.
            species: ``(B, n, n, n)`` atomic number per voxel (0: no atom).
            stage: ``"joint"`` (both networks), ``"vae"`` (``MSE + beta KL``; no ``ce``
                returned) or ``"unet"`` (``CE`` of the U-Net on the frozen VAE's posterior
                mean; the VAE must be in eval mode and gets no gradient).

        Returns:
            Scalar tensors ``loss``, ``mse``, ``kl``, ``ce``; in eval mode also ``acc_atoms``
            (fraction of atom voxels whose argmax class is right) and ``acc`` (all voxels).
            Eval mode decodes the posterior mean instead of a draw.
        """
        x = self.scale(density)
        c = self.condition(x)
        if stage == "unet":
            with torch.no_grad():
                recon, mu, logvar = self.vae(x, c, sample=False)
        else:
            recon, mu, logvar = self.vae(x, c, sample=self.training)
        mse = F.mse_loss(recon.float(), x)
        kl = kl_divergence(mu, logvar)
        if stage == "vae":
            return {"loss": mse + self.beta * kl, "mse": mse, "kl": kl}
        seg_in = recon if self.ce_into_decoder and stage == "joint" else recon.detach()
        target = self.targets(species)
        unet_input = self.config.unet_input if self.training else "reconstruction"
        if unet_input == "both":
            # One U-Net pass over the true and the decoded grids together (BatchNorm sees
            # both), each half scored against the same species.
            logits_both = self.unet(torch.cat([x.to(seg_in.dtype), seg_in]))
            ce = 0.5 * (
                self._ce(logits_both[: len(x)], target) + self._ce(logits_both[len(x) :], target)
            )
            logits = logits_both[len(x) :]
        else:
            logits = self.unet(x if unet_input == "truth" else seg_in)
            ce = self._ce(logits, target)
        if stage == "unet":
            out = {"loss": ce, "mse": mse.detach(), "kl": kl.detach(), "ce": ce}
        else:
            out = {"loss": mse + self.beta * kl + self.gamma * ce, "mse": mse, "kl": kl, "ce": ce}
        if not self.training:
            with torch.no_grad():
                pred = self.class_log_probs(logits).argmax(dim=1)
                valid = target != IGNORE_INDEX
                atoms = valid & (target != 0)
                out["acc"] = ((pred == target) & valid).sum() / valid.sum().clamp(min=1)
                out["acc_atoms"] = ((pred == target) & atoms).sum() / atoms.sum().clamp(min=1)
        return out

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.factorised:
            return F.cross_entropy(
                logits.float(), target, weight=self.class_weights, ignore_index=IGNORE_INDEX
            )
        # Masks, not boolean indexing: the shapes stay static for torch.compile.
        valid = target != IGNORE_INDEX
        atom = valid & (target > 0)
        odds = logits[:, 0].float()
        weight = torch.tensor(float(self.config.atom_weight), device=odds.device)
        per_voxel = F.binary_cross_entropy_with_logits(
            odds, atom.float(), pos_weight=weight, reduction="none"
        )
        bce = (per_voxel * valid).sum() / valid.sum().clamp(min=1)
        species_target = torch.where(atom, target - 1, IGNORE_INDEX)
        species = F.cross_entropy(
            logits[:, 1:].float(), species_target, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return bce + species / atom.sum().clamp(min=1)

    def class_log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The U-Net's output ``(B, 1 + K, n, n, n)`` as class scores for the decoders:
        the logits themselves (softmax head) or the factorised head's log-probabilities
        ``log p(no atom) = log sigmoid(-a)``, ``log p(k) = log sigmoid(a) + log softmax(s)_k``."""
        if not self.factorised:
            return logits
        odds = logits[:, :1].float()
        species = F.log_softmax(logits[:, 1:].float(), dim=1)
        return torch.cat([F.logsigmoid(-odds), F.logsigmoid(odds) + species], dim=1)

    # ---- inference ----------------------------------------------------------------------
    @torch.no_grad()
    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Class index per voxel ``(B, n, n, n)`` (int64) of a network grid ``(B, 1, n, n, n)``."""
        return self.class_log_probs(self.unet(x)).argmax(dim=1)

    @torch.no_grad()
    def reconstruct(
        self, density: torch.Tensor, *, sample: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode, decode and segment a batch.

        Args:
            density: ``(B, n, n, n)`` raw density, Å^-3.
            sample: decode a posterior draw instead of the posterior mean.

        Returns:
            ``(reconstruction (B, n, n, n) raw Å^-3 float32, atomic number per voxel
            (B, n, n, n) int64, 0 = no atom)``.
        """
        x = self.scale(density)
        recon, _, _ = self.vae(x, self.condition(x), sample=sample)
        return self.unscale(recon), self.z_of_class[self.segment(recon)]

    @torch.no_grad()
    def reconstruct_scores(self, density: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode, decode (posterior mean) and score every class of every voxel.

        Returns:
            ``(reconstruction (B, n, n, n) raw Å^-3 float32, U-Net logits (B, classes, n, n,
            n))``, for :func:`~crystalgrid.models.decoding.segmentation.decode_class_scores`.
        """
        x = self.scale(density)
        recon, _, _ = self.vae(x, self.condition(x), sample=False)
        return self.unscale(recon), self.class_log_probs(self.unet(recon))

    @torch.no_grad()
    def segment_scores(self, density: torch.Tensor) -> torch.Tensor:
        """The U-Net's class log-probabilities ``(B, classes, n, n, n)`` of the densities
        ``(B, n, n, n)`` Å^-3 themselves (no VAE): the segmenter scored on its own."""
        return self.class_log_probs(self.unet(self.scale(density)))

    @torch.no_grad()
    def generate(
        self, z: torch.Tensor, c: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode latent vectors ``(B, latent)`` (and conditions ``(B,)`` in scaled units).

        Returns:
            ``(density (B, n, n, n) raw Å^-3, atomic number per voxel (B, n, n, n))``.
        """
        recon = self.vae.decode(z, c)
        return self.unscale(recon), self.z_of_class[self.segment(recon)]

    def n_parameters(self) -> dict[str, int]:
        """Trainable parameters of each network and in total."""
        vae, unet = self.vae.n_parameters(), self.unet.n_parameters()
        return {"vae": vae, "unet": unet, "total": vae + unet}
