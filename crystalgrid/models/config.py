"""The full configuration of a reference-model training run (saved in every checkpoint).

One flat, JSON-ready dataclass: the architecture, the loss weights, the optimiser and the
run-time choices (device, precision, compilation). Reference configurations live in the
top-level ``models/`` folder as JSON files readable by :meth:`TrainConfig.from_file`.

Density scale. The networks see ``density * density_scale``. The default, 1.0, feeds the raw
density of Eq. (1) of the paper (Å^-3): an isolated atom peaks at ``Z / (sigma^3 (2 pi)^1.5)``,
about ``0.0635 Z`` for sigma = 1 Å (0.5 for O, 1.65 for Fe, 5.3 for Bi), already a healthy
O(1) range. The scale is fixed and stored, never per sample, so a decoded grid converts back
to Å^-3 by dividing by it, and the loss weights keep their meaning across datasets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from crystalgrid.config_base import Config
from crystalgrid.errors import ConfigError, NotFoundError

__all__ = ["TrainConfig", "shipped_config", "shipped_configs"]

_PRECISIONS = ("auto", "fp32", "bf16")
#: Learning-rate schedules (see ``TrainConfig.lr_schedule``).
LR_SCHEDULES = ("constant", "cosine")
#: What the U-Net can be trained on (see ``TrainConfig.unet_input``).
UNET_INPUTS = ("reconstruction", "truth", "both")
#: How the U-Net's output channels are read (see ``TrainConfig.head``).
HEADS = ("softmax", "factorised")
#: Training-time augmentations (see ``TrainConfig.augment``).
AUGMENTATIONS = ("none", "cube")


#: Field metadata of the settings that define the networks and the loss: a resumed run must
#: keep them (:meth:`TrainConfig.frozen_on_resume`).
FROZEN_ON_RESUME = {"frozen_on_resume": True}


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """Everything that defines a training run of the beta-VAE + attention U-Net.

    Attributes:
        latent_dim: size of the VAE bottleneck (paper: 300).
        latent_kind: ``"dense"`` (the paper's fully connected bottleneck) or ``"conv"`` (a
            latent grid on the encoder's 8^3 cells, ``latent_dim / 512`` channels each; see
            :mod:`crystalgrid.models.nets.vae`).
        encoder_channels: channels of the four encoder convolutions (paper: 16, 32, 64, 128).
        decoder_channels: channels of the three upsampling convolutions (paper: 64, 32, 16).
        unet_base_channels: channels at the U-Net's finest level; doubled at each level.
        unet_levels: number of 2x poolings in the U-Net (4: 32^3 -> 2^3 after padding 30 -> 32).
        conditional: scale the bottleneck input and output by each sample's largest (scaled)
            density (paper appendix G.1).
        output_activation: the decoder's last activation, ``"softplus"`` (default) or
            ``"relu"`` (the paper's, which can die: see :mod:`crystalgrid.models.nets.vae`).
        input_norm: BatchNorm after the first convolution of the encoder and of the U-Net
            (the paper's). ``False`` leaves those layers unnormalised, so a sample's absolute
            amplitudes (which carry Z) are not divided by statistics of its batch-mates.
        density_scale: the networks see ``density * density_scale`` (see module docstring).
        classes: atomic numbers of the U-Net's species classes, ascending, without 0 (class 0
            is "no atom"). ``None``: the species present in the training split.
        beta: weight of the KL term (KL summed over latent dims, averaged over the batch).
        gamma: weight of the U-Net cross-entropy in the joint loss (paper: 0.1).
        ce_into_decoder: let the cross-entropy's gradient flow into the VAE (paper: joint
            training). ``False`` (default) detaches the decoded density before the U-Net:
            with the gradient in the decoder, the joint loss can be met by a decoded
            "density" that collapses towards zero while the U-Net's BatchNorm rescales it.
        unet_input: what the U-Net is trained on: ``"reconstruction"`` (the paper's: the
            VAE's output), ``"truth"`` (the true density) or ``"both"`` (the mean of the two
            cross-entropies). At inference it always segments the reconstruction.
        head: how the U-Net's ``1 + K`` output channels are read. ``"softmax"`` (the paper's):
            one softmax over "no atom" and the K species, trained by a weighted
            cross-entropy. ``"factorised"``: channel 0 is the log-odds of "an atom here"
            (binary cross-entropy, positives weighted by ``atom_weight``) and channels 1..K
            a softmax over species trained on atom voxels only, so the species are not
            drowned by the ~99.7% of empty voxels. Both give the same ``1 + K`` class
            log-probabilities to the decoders.
        vae_stage: the fraction of the run's steps that trains the VAE alone; ``0`` (the
            paper's) trains both networks in every step. In ``(0, 1)`` the run has two stages:
            the VAE (MSE + beta KL, its own cosine schedule), then the VAE frozen and the U-Net
            trained on its posterior-mean reconstructions (and the truth, per ``unet_input``)
            with a schedule of its own starting at ``lr * unet_lr_scale``, so the U-Net learns
            from the reconstructions it is scored on, at full learning rate.
        augment: ``"cube"`` maps each training sample by one of the 48 symmetries of the cube
            (axis permutations and flips), drawn per sample and step from the seed; they send
            voxel centres onto voxel centres, so density and species stay exact. ``"none"``:
            the stored samples as they are.
        atom_weight: cross-entropy weight of every atom class relative to "no atom" (paper:
            1). Atom voxels are ~0.3% of a grid; on the overfit set 10 did better than 1 and
            30 (models/overfit-cpu.md).
        background_prior: the probability of "no atom" the U-Net's head starts at, at
            every voxel (0.99: single cells hold ~0.25% atom voxels, repeated crops ~2.8%).
        lr: Adam learning rate (paper: 1e-5).
        unet_lr_scale: the U-Net's learning rate relative to ``lr`` (its loss is separate
            from the VAE's when ``ce_into_decoder`` is off).
        lr_schedule: ``"constant"`` (the paper's) or ``"cosine"``: from ``lr`` down to
            ``lr / 100`` along a half cosine over the run's steps (``max_steps``, or
            ``epochs`` times the steps of an epoch).
        warmup_steps: the learning rate rises linearly from ``lr / 100`` to ``lr`` over the
            first this many steps (of each stage in a staged run). Adam's first steps move
            every weight by about ``lr`` in the direction of its gradient's sign, which at the
            paper's 65,536-wide bottleneck shifts the latent mean by tens at ``lr`` 1e-3.
        batch_size: samples per step (paper: 24).
        weight_decay: Adam weight decay.
        grad_clip: clip the global gradient norm to this value; ``None``: no clipping.
        epochs: passes over the training split.
        max_steps: stop after this many optimiser steps in total; ``None``: no limit.
        seed: seeds torch and the shuffle (epoch ``e`` shuffles with ``seed + e``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        precision: ``"auto"`` (bf16 autocast where the processor runs bf16 natively: a CUDA
            GPU, a CPU with AVX512-BF16 or AMX; fp32 elsewhere), ``"fp32"``, ``"bf16"`` (on a
            CPU that only emulates it, a warning and a run many times slower than fp32).
        compile: ``torch.compile`` the training step; ``None``: on CUDA only.
        log_every: write a step record to the log every this many steps.
        checkpoint_every: also checkpoint every this many steps (0: at the end of each epoch
            only).
        val_max_batches: score at most this many validation batches per epoch; ``None``: all.
        prefetch: batches read ahead by a background thread (0: read in the training loop).
    """

    # architecture
    latent_dim: int = field(default=300, metadata=FROZEN_ON_RESUME)
    latent_kind: str = field(default="dense", metadata=FROZEN_ON_RESUME)
    encoder_channels: tuple[int, int, int, int] = field(
        default=(16, 32, 64, 128), metadata=FROZEN_ON_RESUME
    )
    decoder_channels: tuple[int, int, int] = field(default=(64, 32, 16), metadata=FROZEN_ON_RESUME)
    unet_base_channels: int = field(default=16, metadata=FROZEN_ON_RESUME)
    unet_levels: int = field(default=4, metadata=FROZEN_ON_RESUME)
    conditional: bool = field(default=False, metadata=FROZEN_ON_RESUME)
    output_activation: str = field(default="softplus", metadata=FROZEN_ON_RESUME)
    input_norm: bool = field(default=True, metadata=FROZEN_ON_RESUME)
    density_scale: float = field(default=1.0, metadata=FROZEN_ON_RESUME)
    classes: tuple[int, ...] | None = None
    # loss
    beta: float = field(default=1e-6, metadata=FROZEN_ON_RESUME)
    gamma: float = field(default=0.1, metadata=FROZEN_ON_RESUME)
    ce_into_decoder: bool = field(default=False, metadata=FROZEN_ON_RESUME)
    unet_input: str = field(default="reconstruction", metadata=FROZEN_ON_RESUME)
    head: str = field(default="softmax", metadata=FROZEN_ON_RESUME)
    vae_stage: float = field(default=0.0, metadata=FROZEN_ON_RESUME)
    atom_weight: float = field(default=1.0, metadata=FROZEN_ON_RESUME)
    background_prior: float = 0.99
    augment: str = field(default="none", metadata=FROZEN_ON_RESUME)
    # optimiser
    lr: float = 1e-5
    unet_lr_scale: float = 1.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    batch_size: int = field(default=24, metadata=FROZEN_ON_RESUME)
    weight_decay: float = 0.0
    grad_clip: float | None = None
    epochs: int = 50
    max_steps: int | None = None
    seed: int = field(default=0, metadata=FROZEN_ON_RESUME)
    # run time
    device: str = "auto"
    precision: str = "auto"
    compile: bool | None = None
    log_every: int = 10
    checkpoint_every: int = 0
    val_max_batches: int | None = None
    prefetch: int = 2
    notes: dict[str, Any] = field(default_factory=dict)

    config_name = "training configuration"

    def __post_init__(self) -> None:
        # Lists from JSON become tuples so configs compare equal after a round trip.
        for name in ("encoder_channels", "decoder_channels", "classes"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(int(v) for v in value))
        problems = []
        if self.latent_dim < 1:
            problems.append(f"latent_dim must be >= 1, got {self.latent_dim}")
        if len(self.encoder_channels) != 4 or min(self.encoder_channels) < 1:
            problems.append(
                f"encoder_channels must be 4 positive ints, got {self.encoder_channels}"
            )
        if len(self.decoder_channels) != 3 or min(self.decoder_channels) < 1:
            problems.append(
                f"decoder_channels must be 3 positive ints, got {self.decoder_channels}"
            )
        if self.unet_base_channels < 1 or self.unet_levels < 1:
            problems.append("unet_base_channels and unet_levels must be >= 1")
        if self.latent_kind not in ("dense", "conv"):
            problems.append(f"latent_kind must be dense or conv, got {self.latent_kind!r}")
        if self.output_activation not in ("softplus", "relu"):
            problems.append(
                f"output_activation must be softplus or relu, got {self.output_activation!r}"
            )
        if not self.density_scale > 0:
            problems.append(f"density_scale must be > 0, got {self.density_scale}")
        if self.classes is not None and (
            0 in self.classes or list(self.classes) != sorted(set(self.classes))
        ):
            problems.append("classes must be ascending distinct atomic numbers without 0")
        if self.beta < 0 or self.gamma < 0:
            problems.append("beta and gamma must be >= 0")
        if self.unet_input not in UNET_INPUTS:
            problems.append(f"unet_input must be one of {UNET_INPUTS}, got {self.unet_input!r}")
        if self.head not in HEADS:
            problems.append(f"head must be one of {HEADS}, got {self.head!r}")
        if not 0 <= self.vae_stage < 1:
            problems.append(f"vae_stage must be in [0, 1), got {self.vae_stage}")
        if self.augment not in AUGMENTATIONS:
            problems.append(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        if not self.atom_weight > 0:
            problems.append(f"atom_weight must be > 0, got {self.atom_weight}")
        if not 0 < self.background_prior < 1:
            problems.append(f"background_prior must be in (0, 1), got {self.background_prior}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not self.unet_lr_scale > 0:
            problems.append(f"unet_lr_scale must be > 0, got {self.unet_lr_scale}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1, got {self.max_steps}")
        if self.precision not in _PRECISIONS:
            problems.append(f"precision must be one of {_PRECISIONS}, got {self.precision!r}")
        if self.log_every < 1 or self.checkpoint_every < 0 or self.prefetch < 0:
            problems.append("log_every must be >= 1, checkpoint_every and prefetch >= 0")
        if problems:
            raise ConfigError("invalid training configuration: " + "; ".join(problems))

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a JSON configuration file (keys as in :meth:`to_dict`; missing keys: defaults),
        or a shipped configuration by name (:func:`shipped_configs`: ``"vae-unet-single"``).

        A top-level ``"_comment"`` key is ignored, so reference files can explain themselves.

        Raises:
            NotFoundError: no such file (the message lists the shipped configurations).
            ConfigError: not valid JSON, not a JSON object, or invalid settings.
        """
        path = Path(path)
        if not path.exists() and path.name == str(path) and path.stem in shipped_configs():
            return shipped_config(path.stem)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            names = ", ".join(shipped_configs())
            raise NotFoundError(
                f"configuration file not found: {path} (shipped configurations: {names})"
            ) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
        return cls._from_json(data, str(path))

    @classmethod
    def _from_json(cls, data: Any, where: str) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must hold a JSON object")
        data.pop("_comment", None)
        return cls.from_dict(data)

    @classmethod
    def frozen_on_resume(cls) -> tuple[str, ...]:
        """The fields a resumed run must keep (those marked ``FROZEN_ON_RESUME``)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("frozen_on_resume"))

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def shipped_configs() -> list[str]:
    """The names of the training configurations shipped with the package (the reference
    models' recipes and the paper's), sorted."""
    folder = resources.files("crystalgrid.models").joinpath("configs")
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )


def shipped_config(name: str) -> TrainConfig:
    """A shipped training configuration by name (``"baseline-1h-cpu-single"``).

    Raises:
        NotFoundError: no shipped configuration has that name (the message lists them).
    """
    if name not in shipped_configs():
        raise NotFoundError(
            f"no shipped training configuration {name!r} (shipped: {', '.join(shipped_configs())})"
        )
    file = resources.files("crystalgrid.models").joinpath("configs", f"{name}.json")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the shipped configuration {name} is not valid JSON: {exc}") from None
    return TrainConfig._from_json(data, f"the shipped configuration {name}")
