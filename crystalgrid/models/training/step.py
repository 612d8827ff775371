"""One optimiser step of the reference model: the stage, the augmentation, the forward pass
under the run's precision, the backward pass, clipping, the scheduled learning rate."""

from __future__ import annotations

from collections.abc import Callable

import torch

from crystalgrid.models.config import TrainConfig
from crystalgrid.models.nets.model import ReferenceModel
from crystalgrid.models.runtime import Runtime
from crystalgrid.models.training.augment import apply_cube_symmetry, cube_symmetries
from crystalgrid.models.training.schedule import learning_rate

__all__ = ["enter_stage", "make_optimizer", "train_step"]


def make_optimizer(model: ReferenceModel, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over two groups (VAE, U-Net); each group's lr is ``lr * lr_scale``."""
    return torch.optim.Adam(
        [
            {"params": model.vae.parameters(), "lr_scale": 1.0},
            {"params": model.unet.parameters(), "lr_scale": config.unet_lr_scale},
        ],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )


def enter_stage(model: ReferenceModel, step: int, boundary: int) -> str:
    """The stage of step ``step``; at the U-Net stage the VAE is frozen (eval mode, no grad)."""
    if not boundary:
        return "joint"
    if step < boundary:
        return "vae"
    if model.vae.training:
        model.vae.eval()
        model.vae.requires_grad_(False)
    return "unet"


def train_step(
    model: ReferenceModel,
    forward: Callable[..., dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    runtime: Runtime,
    density: torch.Tensor,
    species: torch.Tensor,
    *,
    step: int,
    total_steps: int,
    boundary: int,
) -> tuple[dict[str, torch.Tensor], float]:
    """Step ``step`` (0-based) on one batch: ``(the loss terms, the learning rate used)``.

    Args:
        model: the networks (for the stage and clipping).
        forward: ``model`` or its compiled form, called as ``forward(density, species, stage)``.
        density, species: ``(B, n, n, n)`` on the run's device.
        total_steps, boundary: the run's length and its stage boundary (0: one joint stage).
    """
    stage = enter_stage(model, step, boundary)
    if config.augment == "cube":
        symmetry = cube_symmetries(len(density), seed=config.seed, step=step)
        density = apply_cube_symmetry(density, symmetry)
        species = apply_cube_symmetry(species, symmetry)
    with runtime.autocast():
        out = forward(density, species, stage)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    lr = learning_rate(config, step, total_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    optimizer.step()
    return out, lr
