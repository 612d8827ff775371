"""Continuing an interrupted run: which checkpoint, whether it may be continued with this
configuration, and the networks, optimiser, RNG states and position restored from it."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crystalgrid.errors import CrystalgridError
from crystalgrid.models.checkpoint import read_checkpoint, restore_rng_state
from crystalgrid.models.config import TrainConfig
from crystalgrid.models.nets.model import ReferenceModel
from crystalgrid.spec import GridSpec

__all__ = ["Position", "checkpoint_to_resume", "restore"]


@dataclass
class Position:
    """Where a run stands: completed epochs, optimiser steps, batches of the current epoch."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best_val: float = math.inf


def checkpoint_to_resume(
    resume: str | Path | None, out_dir: Path, config: TrainConfig, spec: GridSpec
) -> dict[str, Any] | None:
    """The checkpoint to resume from, checked against the new run's config and spec.

    Raises:
        CrystalgridError: a new run into a folder that holds one; a weights-only export; a
            checkpoint whose frozen fields (:meth:`TrainConfig.frozen_on_resume`) or grid
            differ from this run's.
    """
    if resume is None:
        if (out_dir / "last.pt").exists():
            raise CrystalgridError(
                f"{out_dir} already holds a run (last.pt); resume it or choose another "
                "output folder"
            )
        return None
    ckpt = read_checkpoint(resume)
    if not ckpt.get("rng"):
        raise CrystalgridError(
            f"{resume} is a weights-only export (a shipped model): it loads for evaluation "
            "and sampling but holds no optimiser state to resume from"
        )
    saved = TrainConfig.from_dict(ckpt["config"])
    frozen = TrainConfig.frozen_on_resume()
    changed = [k for k in frozen if getattr(saved, k) != getattr(config, k)]
    if changed:
        raise CrystalgridError(
            f"cannot resume {resume} with a different {', '.join(changed)}; "
            "start a new run or keep the checkpoint's values"
        )
    if GridSpec.from_dict(ckpt["spec"]) != spec:
        raise CrystalgridError(f"{resume} was trained on a different grid spec")
    return ckpt


def restore(
    ckpt: dict[str, Any],
    model: ReferenceModel,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    resume: str | Path,
    cuda: bool,
) -> Position:
    """Load the networks, the optimiser and the RNG states; return the saved position."""
    model.load_state_dict(ckpt["model"])
    if ckpt.get("optimizer"):
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError:
            raise CrystalgridError(
                f"{resume} holds an optimiser state of an older trainer (one parameter "
                "group); its weights load, but resuming needs a new run"
            ) from None
    for group in optimizer.param_groups:  # a changed lr applies from here on
        group["lr"] = config.lr * group["lr_scale"]
    why = restore_rng_state(ckpt["rng"], cuda=cuda)
    if why is not None:
        warnings.warn(
            f"resuming {resume}: {why}; the run goes on but will not repeat an "
            "uninterrupted one exactly",
            RuntimeWarning,
            stacklevel=4,  # restore <- _start <- train <- the caller
        )
    return Position(
        epoch=int(ckpt["epoch"]),
        step=int(ckpt["step"]),
        batch_in_epoch=int(ckpt["batch_in_epoch"]),
        best_val=float(ckpt.get("best_val", math.inf)),
    )
