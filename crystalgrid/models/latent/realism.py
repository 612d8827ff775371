"""The realism scorer of the paper's appendix G.

An autoencoder with a small KL weight (any checkpoint of this package trained with a low beta;
the shipped configuration ``realism-ae`` is the reference) maps a real grid to ``z_real`` (the
posterior mean). Mixing it with a random draw,

    ``z = lambda * z_N(0,1) + (1 - lambda) * z_real``,  ``lambda ~ U(0, 1)``,

and decoding gives grids that range from "a real crystal, decoded" (``lambda = 0``) to "a
random draw" (``lambda = 1``). A small 3-D CNN (:class:`LambdaNet`) learns to predict
``lambda`` from the decoded grid alone (binary cross-entropy against the soft target). The
*realism score* of a grid is ``1 - lambda_hat``, in [0, 1]: high for grids that look like
decoded real crystals.

The paper reports 0.90 +- 0.01 for real decoded samples and 0.84 +- 0.05 for random draws
(appendix G). :func:`score_report` gives the same two numbers, plus the scores of
the real grids themselves (not decoded) and of out-of-distribution inputs: noise grids with
the real grids' voxel statistics and real grids with their voxels shuffled.

Files: :func:`save_scorer` / :func:`load_scorer` keep the network, its configuration, the
autoencoder it was trained against (path and step) and the training history, readable with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
import struct
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

from crystalgrid.contracts import iter_view
from crystalgrid.errors import BadInputError, NotFoundError
from crystalgrid.models.checkpoint import Checkpoint, as_checkpoint, atomic_save
from crystalgrid.models.runtime import resolve_runtime
from crystalgrid.models.scoring.metrics import percentiles

__all__ = [
    "REALISM_FORMAT",
    "LambdaNet",
    "RealismScorer",
    "load_scorer",
    "mix_latents",
    "save_scorer",
    "score_grids",
    "score_report",
    "train_realism",
]

REALISM_FORMAT = "crystalgrid.models/realism/1"


class LambdaNet(nn.Module):
    """A small 3-D CNN: a scaled density grid ``(B, 1, n, n, n)`` -> logit of lambda ``(B,)``.

    Three stride-2 convolutions (k3, LeakyReLU) with ``channels``, global average pooling and
    a linear layer. ``sigmoid(logit)`` is the predicted lambda.

    Args:
        channels: the three convolutions' channels.
    """

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in self.channels:
            layers += [nn.Conv3d(c_in, c_out, 3, stride=2, padding=1), nn.LeakyReLU(0.01)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B,)`` of ``x`` ``(B, 1, n, n, n)``."""
        h = self.features(x).mean(dim=(2, 3, 4))
        return self.head(h).squeeze(1)


@dataclass
class RealismScorer:
    """A trained lambda network with what it was trained against.

    Attributes:
        net: the network (eval mode).
        density_scale: the autoencoder's density scale (grids are scored in scaled units).
        bins: grid size.
        autoencoder: path and step of the autoencoder checkpoint.
        history: training records (``step``, ``loss``, ``mae`` of lambda).
        config: ``channels``, ``steps``, ``batch_size``, ``lr``, ``seed``.
        path: where it was read from.
    """

    net: LambdaNet
    density_scale: float
    bins: int
    autoencoder: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def score(self, density: np.ndarray | torch.Tensor, *, batch_size: int = 64) -> np.ndarray:
        """Realism scores ``1 - lambda_hat`` in [0, 1] of raw density grids.

        Args:
            density: ``(B, n, n, n)`` Å^-3 (raw, as stored or decoded).

        Returns:
            ``(B,)`` float64.
        """
        return score_grids(self, density, batch_size=batch_size)


def mix_latents(
    z_real: torch.Tensor, lam: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``lam * z_N(0,1) + (1 - lam) * z_real``.

    Args:
        z_real: ``(B, latent)``; lam: ``(B,)`` in [0, 1].
        generator: the source of the normal draws.
    """
    noise = torch.randn(z_real.shape, generator=generator).to(z_real.device, z_real.dtype)
    lam = lam.reshape(-1, 1).to(z_real.device, z_real.dtype)
    return lam * noise + (1.0 - lam) * z_real


def _cycle(view: Any, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    epoch = 0
    while True:
        got = False
        try:
            source = view.iter_batches(
                batch_size, shuffle=True, seed=seed + epoch, drop_last=True, fields=("density",)
            )
        except TypeError:
            source = view.iter_batches(batch_size, shuffle=True, seed=seed + epoch, drop_last=True)
        for batch in source:
            got = True
            yield np.ascontiguousarray(batch["density"], dtype=np.float32)
        if not got:
            raise BadInputError(f"the split has fewer than {batch_size} samples")
        epoch += 1


def train_realism(
    checkpoint: str | Path | Checkpoint,
    view: Any,
    *,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 1e-3,
    channels: tuple[int, int, int] = (16, 32, 64),
    seed: int = 0,
    device: str = "cpu",
    precision: str = "auto",
    log_every: int = 50,
    quiet: bool = True,
) -> RealismScorer:
    """Train the lambda network on mixes decoded by a (low-beta) autoencoder checkpoint.

    Each step takes a batch of real grids, encodes them (posterior means, frozen
    autoencoder), draws ``lambda ~ U(0, 1)`` and ``z_N ~ N(0, 1)`` per sample, decodes
    ``lambda z_N + (1 - lambda) z_real`` and fits the network's ``sigmoid`` output to
    ``lambda`` (binary cross-entropy with soft targets; Adam).

    Args:
        checkpoint: the autoencoder (an unconditional checkpoint of
            :func:`crystalgrid.models.training.loop.train`, e.g. ``shipped_config("realism-ae")``).
        view: the split to draw real grids from (``iter_batches`` with ``density``).
        steps: optimiser steps. batch_size: real grids per step. lr: Adam's rate.
        channels: :class:`LambdaNet` channels.
        seed: seeds the network, the shuffle and the mixes.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        precision: ``"auto"`` (bf16 autocast where the processor runs it natively, else
            fp32), ``"fp32"`` or ``"bf16"``.
        log_every: keep a history record every this many steps.
        quiet: no progress bar.

    Returns:
        The trained :class:`RealismScorer` (eval mode).
    """
    from tqdm.auto import tqdm

    ckpt = as_checkpoint(checkpoint)
    _unconditional(ckpt)
    runtime = resolve_runtime(device, precision, compile=False)
    model = runtime.place(ckpt.model).eval()
    torch.manual_seed(seed)
    net = runtime.place(LambdaNet(channels))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    loss_sum = mae_sum = 0.0
    window = 0
    t0 = time.perf_counter()
    batches = _cycle(view, batch_size, seed)
    net.train()
    for step in tqdm(range(1, steps + 1), desc="realism", disable=quiet, leave=False):
        density = torch.from_numpy(next(batches)).to(runtime.device)
        with torch.no_grad(), runtime.autocast():
            mu, _, _ = model.posterior(density)
            lam = torch.rand(len(mu), generator=gen)
            grid = model.vae.decode(mix_latents(mu.float(), lam, gen))
        lam = lam.to(runtime.device)
        with runtime.autocast():
            logits = net(grid)
        loss = F.binary_cross_entropy_with_logits(logits.float(), lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach())
        mae_sum += float((torch.sigmoid(logits.detach()) - lam).abs().mean())
        window += 1
        if step % log_every == 0 or step == steps:
            history.append(
                {
                    "step": step,
                    "loss": loss_sum / window,
                    "mae": mae_sum / window,
                    "seconds": time.perf_counter() - t0,
                }
            )
            loss_sum = mae_sum = 0.0
            window = 0
    net.eval()
    return RealismScorer(
        net=net,
        density_scale=float(ckpt.config.density_scale),
        bins=int(ckpt.spec.bins),
        autoencoder={
            "path": str(ckpt.path) if ckpt.path else None,
            "step": ckpt.step,
            "beta": ckpt.config.beta,
        },
        history=history,
        config={
            "channels": list(net.channels),
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
        },
    )


@torch.no_grad()
def score_grids(
    scorer: RealismScorer, density: np.ndarray | torch.Tensor, *, batch_size: int = 64
) -> np.ndarray:
    """Realism scores ``1 - sigmoid(net(density * density_scale))`` of raw grids.

    Args:
        scorer: the trained scorer.
        density: ``(B, n, n, n)`` Å^-3.

    Returns:
        ``(B,)`` float64 in [0, 1].
    """
    net = scorer.net.eval()
    device = next(net.parameters()).device
    d = torch.as_tensor(np.asarray(density, dtype=np.float32))
    if d.dim() != 4 or tuple(d.shape[1:]) != (scorer.bins,) * 3:
        raise ValueError(f"expected (B, {scorer.bins}, {scorer.bins}, {scorer.bins}) grids")
    out = []
    for a in range(0, len(d), batch_size):
        x = (d[a : a + batch_size].to(device) * scorer.density_scale).unsqueeze(1)
        out.append(1.0 - torch.sigmoid(net(x)).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _stats(scores: np.ndarray) -> dict[str, Any]:
    return {
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "n": int(scores.size),
        "percentiles": percentiles(scores, (10, 50, 90)),
    }


def score_report(
    scorer: RealismScorer,
    checkpoint: str | Path | Checkpoint,
    view: Any,
    *,
    n: int = 256,
    seed: int = 0,
    generators: dict[str, str | Path | Checkpoint] | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    precision: str = "auto",
) -> dict[str, Any]:
    """Mean realism scores of real, decoded, random and out-of-distribution grids.

    Categories (``n`` grids each; the real ones are the first ``n`` of ``view``):

    - ``real``: the stored grids themselves, not decoded.
    - ``real_decoded``: their reconstructions by ``checkpoint`` (posterior mean; lambda = 0).
    - ``random_draws``: ``checkpoint``'s random draws, from its learned prior where it has one
      (then also ``random_draws_normal``: ``z ~ N(0, 1)``, the paper's draws, lambda = 1).
    - ``noise``: out of distribution: every voxel drawn independently from the real grids'
      pooled voxel values (same histogram, no structure).
    - ``shuffled``: out of distribution: each real grid with its voxels permuted.
    - for each entry of ``generators``: ``<name>_random_draws`` and ``<name>_real_decoded``,
      the same for another checkpoint (e.g. the reference VAE the scorer is meant to judge).

    The networks of the checkpoints run at ``precision`` (``"auto"``: bf16 autocast where the
    processor runs it natively, else fp32); the scorer itself in fp32.

    Returns:
        ``{category: {"mean", "std", "n", "percentiles"}}`` plus ``"scorer"`` facts.
    """
    from crystalgrid.models.latent.draws import random_draws

    ckpt = as_checkpoint(checkpoint)
    parts = []
    for batch in iter_view(view, batch_size, fields=("density",)):
        parts.append(np.asarray(batch["density"], dtype=np.float32))
        if sum(len(p) for p in parts) >= n:
            break
    if not parts:
        raise BadInputError("the split has no samples to score")
    real = np.concatenate(parts)[:n]
    rng = np.random.default_rng(seed)
    flat = real.reshape(len(real), -1)
    noise = rng.choice(flat.ravel(), size=flat.shape).reshape(real.shape).astype(np.float32)
    shuffled = np.stack([row[rng.permutation(row.size)] for row in flat]).reshape(real.shape)

    def decoded(model_ckpt: Checkpoint, prior: str = "auto") -> tuple[np.ndarray, Any]:
        _unconditional(model_ckpt)
        runtime = resolve_runtime(device, precision, compile=False)
        model = runtime.place(model_ckpt.model).eval()
        recon = []
        for a in range(0, len(real), batch_size):
            grids = torch.from_numpy(real[a : a + batch_size]).to(runtime.device)
            with runtime.autocast():
                r, _ = model.reconstruct(grids)
            recon.append(r.float().cpu().numpy())
        draws = random_draws(
            model_ckpt,
            len(real),
            seed=seed,
            batch_size=batch_size,
            device=device,
            precision=precision,
            prior=prior,
        )
        return np.concatenate(recon), draws

    recon, draws = decoded(ckpt)
    report: dict[str, Any] = {
        "real": _stats(scorer.score(real)),
        "real_decoded": _stats(scorer.score(recon)),
        "random_draws": {**_stats(scorer.score(draws.density)), "prior": draws.prior},
        "noise": _stats(scorer.score(noise)),
        "shuffled": _stats(scorer.score(shuffled)),
    }
    if draws.prior == "learned":  # the paper's N(0, 1) draws beside the learned prior's
        report["random_draws_normal"] = {
            **_stats(scorer.score(decoded(ckpt, "normal")[1].density)),
            "prior": "normal",
        }
    for name, other in (generators or {}).items():
        other_ckpt = as_checkpoint(other)
        o_recon, o_draws = decoded(other_ckpt)
        report[f"{name}_real_decoded"] = _stats(scorer.score(o_recon))
        report[f"{name}_random_draws"] = {
            **_stats(scorer.score(o_draws.density)),
            "prior": o_draws.prior,
        }
    report["scorer"] = {
        "score": "1 - predicted lambda (lambda: weight of the N(0,1) draw in the mix)",
        "autoencoder": scorer.autoencoder,
        "config": scorer.config,
        "final": scorer.history[-1] if scorer.history else None,
        "paper": {"real_decoded": "0.90 +- 0.01", "random_draws": "0.84 +- 0.05"},
    }
    return report


def _unconditional(ckpt: Checkpoint) -> None:
    if ckpt.config.conditional:
        raise BadInputError(
            f"{ckpt.path or 'the checkpoint'} is a conditional model; the realism scorer "
            "(appendix G) mixes and decodes latents of an unconditional autoencoder"
        )


def save_scorer(scorer: RealismScorer, path: str | Path) -> Path:
    """Write the scorer (weights, configuration, provenance, history) to ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(
        {
            "format": REALISM_FORMAT,
            "state": {k: v.detach().cpu() for k, v in scorer.net.state_dict().items()},
            "channels": list(scorer.net.channels),
            "density_scale": scorer.density_scale,
            "bins": scorer.bins,
            "autoencoder": scorer.autoencoder,
            "history": scorer.history,
            "config": scorer.config,
        },
        path,
    )
    return path


def load_scorer(path: str | Path, *, device: str = "cpu") -> RealismScorer:
    """Read a scorer written by :func:`save_scorer` (weights only: no code is unpickled).

    Raises:
        NotFoundError: a missing file.
        BadInputError: a file that is not a realism scorer.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"realism scorer not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise BadInputError(f"{path} is not a readable realism scorer")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError, struct.error):
        raise BadInputError(f"{path} is not a readable realism scorer") from None
    if not isinstance(data, dict) or data.get("format") != REALISM_FORMAT:
        raise BadInputError(f"{path} is not a crystalgrid realism scorer")
    net = LambdaNet(tuple(data["channels"]))
    net.load_state_dict(data["state"])
    net.to(device).eval()
    return RealismScorer(
        net=net,
        density_scale=float(data["density_scale"]),
        bins=int(data["bins"]),
        autoencoder=dict(data.get("autoencoder") or {}),
        history=list(data.get("history") or []),
        config=dict(data.get("config") or {}),
        path=path,
    )
