"""The schedule of a run: where a staged run's U-Net stage starts, and each step's learning rate."""

from __future__ import annotations

import math

from crystalgrid.models.config import TrainConfig

__all__ = ["learning_rate", "stage_boundary"]


def stage_boundary(config: TrainConfig, total_steps: int) -> int:
    """The first step of the U-Net stage of a staged run (0: joint training throughout)."""
    if not config.vae_stage:
        return 0
    return min(max(1, round(config.vae_stage * total_steps)), max(1, total_steps - 1))


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of a run of ``total_steps``.

    A staged run (``config.vae_stage``) restarts the schedule at the U-Net stage: each stage
    decays from ``lr`` over its own steps (the groups' ``lr_scale`` applies on top). The first
    ``config.warmup_steps`` of each stage rise linearly from ``lr / 100``.
    """
    boundary = stage_boundary(config, total_steps)
    if boundary:
        if step >= boundary:
            step, total_steps = step - boundary, total_steps - boundary
        else:
            total_steps = boundary
    floor = config.lr / 100
    warmup = config.warmup_steps
    if step < warmup:
        return floor + (config.lr - floor) * step / warmup
    if config.lr_schedule == "constant" or total_steps - warmup <= 1:
        return config.lr
    progress = min(step - warmup, total_steps - warmup - 1) / (total_steps - warmup - 1)
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
