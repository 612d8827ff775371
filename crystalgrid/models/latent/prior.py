"""A prior learned over a trained model's latent grid, so that random draws look like crystals.

A VAE trained with a small KL weight leaves its posteriors far from ``N(0, 1)``: decoding
``z ~ N(0, 1)`` fills the box with atoms. :class:`LatentPrior` is a second-stage model of
where the encoder puts real crystals (the aggregate posterior), fitted after training:

- **Order.** The latent grid's cells (one per 1.25 Å of the box for the shipped models) are
  split into ``stride^3`` groups by their indices modulo ``stride``, ``g = stride^2 (i % stride)
  + stride (j % stride) + k % stride``: two cells of one group are at least ``stride`` cells
  apart along an axis. The groups are drawn in turn, each given the groups before it:
  ``p(z) = prod_g p(z_g | z_<g)``, and the cells of one group are independent given the
  earlier groups. ``stride^3`` passes draw a whole grid (27 for the default 3); two cells
  fewer than ``stride`` cells apart are never drawn at once, so the later one sees the first.
- **Network.** A small 3-D convolutional network reads the known cells (masked), the mask
  and the cells being drawn, and gives each cell of that group a mixture of ``components``
  Gaussians per latent channel (weights, means, widths): a cell's latent is multimodal
  (an atom there or not), which one Gaussian cannot hold.
- **Training.** Posterior draws ``z = mu + sigma * eps`` of the training split's samples (the
  encoder run once), a random group per sample, the mixture's negative log-likelihood of that
  group's cells; Adam. Minutes on 2 CPU cores.

The prior is saved beside the model's weights (:func:`save_prior`, ``NAME.prior.pt`` for
``NAME.pt``) with the SHA-256 of the VAE it was fitted to (:func:`vae_fingerprint`);
:func:`load_prior` refuses a prior of another model.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from crystalgrid.contracts import ViewLike, iter_view
from crystalgrid.errors import BadInputError, IntegrityError, NotFoundError
from crystalgrid.fileio import open_atomic

if TYPE_CHECKING:
    from crystalgrid.models.checkpoint import Checkpoint

__all__ = [
    "PRIORS",
    "LatentPrior",
    "PriorFit",
    "draw_latents",
    "encode_split",
    "fit_prior",
    "latent_nll",
    "load_prior",
    "prior_for",
    "prior_path",
    "save_prior",
    "train_on_latents",
    "vae_fingerprint",
]

_FORMAT = "crystalgrid-latent-prior/1"
_LOG_2PI = math.log(2 * math.pi)


def _group_index(size: int, stride: int) -> torch.Tensor:
    """``(size, size, size)`` int64: each cell's group, its indices modulo ``stride``."""
    i = torch.arange(size) % stride
    return stride**2 * i[:, None, None] + stride * i[None, :, None] + i[None, None, :]


class LatentPrior(nn.Module):
    """The group-ordered mixture prior over a latent grid (module docstring).

    Args:
        shape: the latent grid ``(channels, size, size, size)``.
        width: the network's channels.
        depth: its 3x3x3 convolutions.
        components: Gaussians per cell and channel.
        stride: cells of one group are this many cells apart (``stride^3`` groups).
    """

    group: torch.Tensor  # (size, size, size) int64: each cell's parity group

    def __init__(
        self,
        shape: tuple[int, ...],
        *,
        width: int = 48,
        depth: int = 5,
        components: int = 4,
        stride: int = 3,
    ) -> None:
        super().__init__()
        channels, size = shape[0], shape[1]
        if len(shape) != 4 or not shape[1] == shape[2] == shape[3] or size < 2:
            raise BadInputError(f"a latent prior needs a cubic latent grid, got shape {shape}")
        self.shape = tuple(int(s) for s in shape)
        if stride < 1:
            raise BadInputError(f"a latent prior's stride must be >= 1, got {stride}")
        self.settings = {
            "width": width,
            "depth": depth,
            "components": components,
            "stride": stride,
        }
        self.components = components
        self.n_groups = stride**3
        self.register_buffer("group", _group_index(size, stride), persistent=False)
        layers: list[nn.Module] = [nn.Conv3d(2 * channels + 1, width, 3, padding=1)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Conv3d(width, width, 3, padding=1)]
        layers += [nn.GELU(), nn.Conv3d(width, 3 * components * channels, 1)]
        self.net = nn.Sequential(*layers)

    def _mixture(
        self, z: torch.Tensor, group: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixture parameters of every cell given the cells of the groups before ``group``.

        Args:
            z: ``(B, C, s, s, s)``; only the cells of earlier groups are read.
            group: one group for the batch, or ``(B,)`` one per sample.

        Returns:
            ``(log-weights, means, log-widths)``, each ``(B, K, C, s, s, s)``.
        """
        b = z.shape[0]
        g = torch.as_tensor(group, device=z.device).reshape(-1).expand(b)
        cells = self.group[None]  # (1, s, s, s)
        known = (cells < g[:, None, None, None]).to(z.dtype)[:, None]  # (B, 1, s, s, s)
        target = (cells == g[:, None, None, None]).to(z.dtype)[:, None]
        x = torch.cat([z * known, known.expand_as(z), target], dim=1)
        out = self.net(x).reshape(b, 3, self.components, *z.shape[1:])
        log_w = torch.log_softmax(out[:, 0], dim=1)
        return log_w, out[:, 1], out[:, 2].clamp(-7.0, 3.0)

    def group_log_prob(self, z: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """``(B,)`` log-density (nats) of each sample's cells of its ``group`` given the
        earlier groups; ``z`` ``(B, latent_dim)``."""
        z = z.reshape(-1, *self.shape)
        log_w, mean, log_s = self._mixture(z, group)
        x = z[:, None]
        log_n = -0.5 * ((x - mean) / log_s.exp()) ** 2 - log_s - 0.5 * _LOG_2PI
        per_cell = torch.logsumexp(log_w + log_n, dim=1)  # (B, C, s, s, s)
        mask = (self.group[None, None] == group.reshape(-1, 1, 1, 1, 1)).to(z.dtype)
        return (per_cell * mask).flatten(1).sum(dim=1)

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``(B,)`` log-density (nats) of latents ``(B, latent_dim)`` under the prior."""
        total = torch.zeros(z.shape[0], device=z.device)
        for g in range(self.n_groups):
            total += self.group_log_prob(z, torch.full((z.shape[0],), g, device=z.device))
        return total

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """``(n, latent_dim)`` draws, one group after the other, on the prior's device.

        Args:
            n: draws.
            generator: a seeded CPU generator (the draws then do not depend on the device).
            temperature: scales the Gaussians' widths (1: the prior itself).
        """
        device = next(self.parameters()).device
        z = torch.zeros(n, *self.shape, device=device)
        for g in range(self.n_groups):
            log_w, mean, log_s = self._mixture(z, g)
            pick = torch.multinomial(
                log_w.movedim(1, -1).reshape(-1, self.components).exp().cpu(),
                1,
                generator=generator,
            ).reshape(n, *self.shape)[:, None]
            m = mean.gather(1, pick.to(device)).squeeze(1)
            s = log_s.gather(1, pick.to(device)).squeeze(1).exp()
            eps = torch.randn(z.shape, generator=generator).to(device)
            draw = m + temperature * s * eps
            z = torch.where(self.group[None, None] == g, draw, z)
        return z.reshape(n, -1)


@dataclass
class PriorFit:
    """A fitted prior and its record.

    Attributes:
        prior: the network.
        vae_sha256: the VAE it was fitted to (:func:`vae_fingerprint`).
        record: steps, seconds, the train and validation negative log-likelihood (nats per
            sample, posterior draws), the data.
    """

    prior: LatentPrior
    vae_sha256: str | None
    record: dict[str, Any]


def encode_split(
    ckpt: Checkpoint, view: ViewLike, *, batch_size: int = 128, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The posterior ``(mu, logvar)`` of every sample of a split, each ``(n, latent_dim)``
    float32, on the CPU in fp32.

    Raises:
        BadInputError: the split is empty.
    """
    model = ckpt.model.float().eval()
    mus, logvars = [], []
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in iter_view(view, batch_size, limit=limit, fields=("density",)):
            density = torch.from_numpy(np.ascontiguousarray(batch["density"], dtype=np.float32))
            mu, logvar, _ = model.posterior(density.to(device))
            mus.append(mu.float().cpu().numpy())
            logvars.append(logvar.float().cpu().numpy())
    if not mus:
        raise BadInputError("the split to fit the prior on is empty")
    return np.concatenate(mus), np.concatenate(logvars)


def fit_prior(
    ckpt: Checkpoint,
    train: ViewLike,
    val: ViewLike | None = None,
    *,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    width: int = 48,
    depth: int = 5,
    components: int = 4,
    stride: int = 3,
    spread: float = 1.0,
    progress: Callable[[int, float], None] | None = None,
) -> PriorFit:
    """Fit a :class:`LatentPrior` to a trained model's posteriors on a training split.

    Args:
        ckpt: the trained model (a latent grid, ``latent_kind: "conv"``).
        train: the split whose posteriors the prior learns.
        val: a split to report the prior's negative log-likelihood on (not fitted).
        steps, batch_size, lr: Adam steps, samples per step, learning rate (cosine decay).
        seed: seeds the posterior draws, the groups and the initial weights.
        width, depth, components, stride: the network and its order (:class:`LatentPrior`).
        spread: the posterior spread the prior is fitted to, as a share of the encoder's
            (1: posterior draws, the default; 0: the posterior means, which the decoder turns
            into reconstructions; docs/latent.md compares them).
        progress: called as ``progress(step, loss)`` after each step.

    Raises:
        BadInputError: a model without a latent grid (the paper's dense latent), a
            conditional model, or an empty split.
    """
    if ckpt.config.latent_kind != "conv":
        raise BadInputError(
            "a learned prior needs a model with a latent grid (latent_kind 'conv'); this model's "
            f"latent is {ckpt.config.latent_kind!r}"
        )
    if ckpt.config.conditional:
        raise BadInputError("a learned prior for a conditional model is not supported")
    if not 0.0 <= spread <= 1.0:
        raise BadInputError(f"spread must be in 0..1, got {spread:g}")
    start = time.perf_counter()
    mu, logvar = (torch.from_numpy(a) for a in encode_split(ckpt, train))
    prior = LatentPrior(
        ckpt.model.vae.latent_shape,
        width=width,
        depth=depth,
        components=components,
        stride=stride,
    )
    sigma = (0.5 * logvar).exp() * spread
    train_on_latents(
        prior, mu, sigma, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress
    )
    record: dict[str, Any] = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "spread": spread,
        "seconds": round(time.perf_counter() - start, 1),
        "n_train": len(mu),
        "train_nll": latent_nll(prior, mu, sigma, seed=seed),
    }
    if val is not None:
        vmu, vlogvar = (torch.from_numpy(a) for a in encode_split(ckpt, val))
        record["n_val"] = len(vmu)
        record["val_nll"] = latent_nll(prior, vmu, (0.5 * vlogvar).exp(), seed=seed)
    return PriorFit(prior, vae_fingerprint(ckpt), record)


def train_on_latents(
    prior: LatentPrior,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> LatentPrior:
    """Fit ``prior`` to posteriors ``N(mu, sigma^2)``, each ``(n, latent_dim)``: Adam with a
    cosine decay, a fresh posterior draw and a random group per sample and step (module
    docstring). Returns the prior, in eval mode."""
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(prior.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    gen = torch.Generator().manual_seed(seed)
    prior.train()
    for step in range(1, steps + 1):
        index = torch.randint(len(mu), (batch_size,), generator=gen)
        z = mu[index] + sigma[index] * torch.randn(batch_size, mu.shape[1], generator=gen)
        group = torch.randint(prior.n_groups, (batch_size,), generator=gen)
        # One group's cells per sample, scaled to the whole grid: nats per sample.
        loss = -prior.group_log_prob(z, group).mean() * prior.n_groups
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(prior.parameters(), 10.0)
        optimiser.step()
        schedule.step()
        if progress is not None:
            progress(step, float(loss.detach()))
    return prior.eval()


def latent_nll(
    prior: LatentPrior,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    *,
    seed: int = 0,
    limit: int | None = 1000,
) -> float:
    """Mean negative log-likelihood (nats per sample) of one posterior draw of each of the
    first ``limit`` samples (``None``: all)."""
    n = len(mu) if limit is None else min(limit, len(mu))
    gen = torch.Generator().manual_seed(seed + 1)
    total = 0.0
    for a in range(0, n, 256):
        b = min(a + 256, n)
        z = mu[a:b] + sigma[a:b] * torch.randn(mu[a:b].shape, generator=gen)
        total += float(-prior.log_prob(z).sum())
    return total / n


def prior_path(weights: str | Path) -> Path:
    """Where the prior of a weights file lives: beside it, ``NAME.prior.pt`` for ``NAME.pt``."""
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}.prior.pt")


def vae_fingerprint(ckpt: Checkpoint) -> str:
    """SHA-256 of the VAE's weights (names and fp32 values): what a prior belongs to. A
    checkpoint's file changes when its decoder settings are tuned; its VAE does not."""
    digest = hashlib.sha256()
    for name, tensor in sorted(ckpt.model.vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_prior(fit: PriorFit, path: str | Path) -> Path:
    """Write a fitted prior (atomically), with the fingerprint of its model's VAE."""
    path = Path(path)
    payload = {
        "format": _FORMAT,
        "shape": list(fit.prior.shape),
        "settings": fit.prior.settings,
        "state": {k: v.to(torch.float32) for k, v in fit.prior.state_dict().items()},
        "vae_sha256": fit.vae_sha256,
        "record": fit.record,
    }
    with open_atomic(path) as fh:
        torch.save(payload, fh)
    return path


def load_prior(path: str | Path, *, vae_sha256: str | None = None) -> PriorFit:
    """Read a prior written by :func:`save_prior`.

    Args:
        path: the prior file.
        vae_sha256: the VAE the prior must belong to (:func:`vae_fingerprint`; ``None``:
            not checked).

    Raises:
        NotFoundError: a missing file.
        BadInputError: a file that is not a readable latent prior.
        IntegrityError: a prior fitted to another model.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"latent prior not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise BadInputError(f"cannot read the latent prior {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise BadInputError(f"{path} is not a crystalgrid latent prior")
    owner = payload.get("vae_sha256")
    if vae_sha256 is not None and owner is not None and owner != vae_sha256:
        raise IntegrityError(
            f"the latent prior {path} was fitted to another model (VAE {owner[:12]}..., "
            f"this model's {vae_sha256[:12]}...)"
        )
    prior = LatentPrior(tuple(payload["shape"]), **payload["settings"])
    prior.load_state_dict(payload["state"])
    return PriorFit(prior.eval(), owner, dict(payload.get("record") or {}))


def prior_for(ckpt: Checkpoint) -> LatentPrior | None:
    """The learned prior beside a checkpoint's weights file (:func:`prior_path`), or
    ``None`` where there is none.

    Raises:
        IntegrityError: the prior there belongs to another model.
        BadInputError: the prior there cannot be read.
    """
    if ckpt.path is None:
        return None
    path = prior_path(ckpt.path)
    if not path.is_file():
        return None
    return load_prior(path, vae_sha256=vae_fingerprint(ckpt)).prior


#: Where random draws come from: the model's learned prior, the paper's ``N(0, 1)``, or the
#: learned one where the model has one (``"auto"``).
PRIORS = ("auto", "learned", "normal")


def draw_latents(
    learned: LatentPrior | None,
    n: int,
    latent_dim: int,
    *,
    seed: int = 0,
    prior: str = "auto",
    temperature: float = 1.0,
) -> tuple[torch.Tensor, str]:
    """``n`` random latents ``(n, latent_dim)`` on the CPU and where they came from
    (``"learned"`` or ``"normal"``), from a CPU generator seeded with ``seed`` (the same
    draws on any device).

    Args:
        learned: the model's learned prior (:func:`prior_for`), or ``None``.
        prior: one of :data:`PRIORS`.
        temperature: scales the learned prior's widths.

    Raises:
        BadInputError: an unknown ``prior`` or ``n < 1``.
        NotFoundError: ``prior="learned"`` for a model without one.
    """
    if prior not in PRIORS:
        raise BadInputError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
    if n < 1:
        raise BadInputError(f"the number of draws must be >= 1, got {n}")
    if prior == "learned" and learned is None:
        raise NotFoundError(
            "this model has no learned prior beside its weights; fit one with `crystalgrid "
            "fit-prior`, or draw from N(0, 1) (prior 'normal')"
        )
    generator = torch.Generator().manual_seed(int(seed))
    if prior != "normal" and learned is not None:
        return learned.sample(n, generator=generator, temperature=temperature).cpu(), "learned"
    return torch.randn(n, latent_dim, generator=generator), "normal"
