"""Training speed on this machine: samples/s of each stage, and a run's expected time.

A few optimiser steps of the configuration's own networks on synthetic grids (a few
Gaussians per grid, the right shapes), so the figure is the model's alone, without the loader.
:func:`expected_training_seconds` turns the rates into a run's time before it starts
(``crystalgrid baseline`` prints it); ``benchmarks/bench_train.py`` tabulates them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from crystalgrid.models.config import TrainConfig
from crystalgrid.models.nets.classes import ClassMap
from crystalgrid.models.nets.model import ReferenceModel
from crystalgrid.models.runtime import Runtime, resolve_runtime
from crystalgrid.models.training.schedule import stage_boundary

__all__ = [
    "StageRates",
    "expected_training_seconds",
    "measure_stage_rates",
    "stage_steps",
    "synthetic_batch",
]


def synthetic_batch(
    batch: int,
    bins: int,
    species: tuple[int, ...],
    device: torch.device,
    *,
    atoms: int = 8,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Density ``(B, n, n, n)`` Å^-3 (``atoms`` Gaussians of sigma 1 Å per grid over a 10 Å
    box) and its species grid ``(B, n, n, n)`` uint8 (Z within 0.5 Å of an atom), on
    ``device``."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, atoms, 3, generator=g) * bins
    z = torch.tensor(species)[torch.randint(len(species), (batch, atoms), generator=g)]
    ax = torch.arange(bins, dtype=torch.float32) + 0.5
    grid = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1)  # (n, n, n, 3)
    density = torch.zeros(batch, bins, bins, bins)
    spec = torch.zeros(batch, bins, bins, bins, dtype=torch.uint8)
    h = 10.0 / bins  # Å per voxel
    norm = (2 * torch.pi) ** -1.5  # the Gaussian's peak at sigma 1 Å, per unit Z
    for a in range(atoms):
        d2 = ((grid[None] - centres[:, a, None, None, None, :]) ** 2).sum(-1) * h * h
        zz = z[:, a].float()[:, None, None, None]
        density += norm * zz * torch.exp(-d2 / 2)
        spec = torch.where(d2 <= 0.25, z[:, a].to(torch.uint8)[:, None, None, None], spec)
    return density.to(device), spec.to(device)


@dataclass(frozen=True)
class StageRates:
    """Training samples/s of each stage a configuration runs.

    Attributes:
        rates: ``{"vae": ..., "unet": ...}`` for a staged run, ``{"joint": ...}`` otherwise.
        runtime: where and how they were measured (``Runtime.describe()``).
        precision: ``"fp32"`` or ``"bf16"``, as used.
        cpu_capability: the CPU's capability (:func:`~crystalgrid.models.runtime.cpu_capability`).
        batch_size: samples per timed step.
        threads: torch's CPU threads.
    """

    rates: dict[str, float]
    runtime: str
    precision: str
    cpu_capability: str
    batch_size: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "samples_per_s": dict(self.rates),
            "runtime": self.runtime,
            "precision": self.precision,
            "cpu_capability": self.cpu_capability,
            "batch_size": self.batch_size,
            "threads": self.threads,
        }


def _stages(config: TrainConfig) -> tuple[str, ...]:
    return ("vae", "unet") if config.vae_stage else ("joint",)


def measure_stage_rates(
    config: TrainConfig,
    *,
    bins: int = 30,
    n_classes: int = 85,
    batch_size: int | None = None,
    steps: int = 2,
    warmup: int = 1,
    runtime: Runtime | None = None,
    memory_format: torch.memory_format | None = None,
) -> StageRates:
    """Time ``steps`` optimiser steps of each stage of ``config``'s networks.

    Args:
        config: the architecture, loss and stages (``vae_stage``) to time.
        bins: voxels per grid axis.
        n_classes: U-Net classes, "no atom" included (the head's width; a run's count is
            its training split's species plus one).
        batch_size: samples per step (default: the configuration's).
        steps, warmup: timed and untimed steps per stage.
        runtime: where and how to run (default: the configuration's device and precision).
        memory_format: the networks' memory format (default: the runtime's, channels-last 3-D
            on a CPU); ``torch.contiguous_format`` times the straightforward layout.

    Returns:
        The samples/s of each stage.
    """
    runtime = runtime or resolve_runtime(config.device, config.precision, compile=False)
    batch = batch_size or config.batch_size
    species = tuple(range(1, max(2, n_classes)))
    density, spec = synthetic_batch(batch, bins, species, runtime.device)
    rates = {}
    for stage in _stages(config):
        torch.manual_seed(0)
        model = runtime.place(ReferenceModel(config, bins, ClassMap(species))).train()
        if memory_format is not None:
            model = model.to(memory_format=memory_format)  # type: ignore[call-overload]
        if stage == "unet":
            model.vae.eval()
            model.vae.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=config.lr)

        def step(
            model: ReferenceModel = model,
            opt: torch.optim.Optimizer = optimizer,
            stage: str = stage,
        ) -> None:
            with runtime.autocast():
                out = model(density, spec, stage)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()

        for _ in range(warmup):
            step()
        _sync(runtime)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(runtime)
        rates[stage] = batch * steps / (time.perf_counter() - t0)
    return StageRates(
        rates=rates,
        runtime=runtime.describe(),
        precision=runtime.precision,
        cpu_capability=runtime.cpu_capability,
        batch_size=batch,
        threads=torch.get_num_threads(),
    )


def _sync(runtime: Runtime) -> None:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)


def stage_steps(config: TrainConfig, total_steps: int, *, done: int = 0) -> dict[str, int]:
    """The optimiser steps of each stage of a run of ``total_steps`` still to go after the
    first ``done``."""
    if not config.vae_stage:
        return {"joint": max(0, total_steps - done)}
    boundary = stage_boundary(config, total_steps)
    return {"vae": max(0, boundary - done), "unet": total_steps - max(boundary, done)}


def expected_training_seconds(
    config: TrainConfig, rates: StageRates, *, total_steps: int, done: int = 0
) -> float:
    """Seconds the steps of a run of ``total_steps`` after the first ``done`` take at
    ``rates`` (the model's steps alone: validation, checkpoints and the loader come on top)."""
    return sum(
        steps * config.batch_size / rates.rates[stage]
        for stage, steps in stage_steps(config, total_steps, done=done).items()
        if steps
    )
