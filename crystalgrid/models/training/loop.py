"""Training of the reference model: a DataLoader-free loop over any "view-like" split.

The trainer needs only this of a split (:class:`~crystalgrid.contracts.ViewLike`, what
``crystalgrid.open_dataset(path).split(name)`` returns): ``len(view)`` and
``view.iter_batches(...)`` yielding ``"density"`` ``(B, n, n, n)`` float32 (Å^-3) and
``"species"`` ``(B, n, n, n)`` uint8. The grid geometry comes from ``spec=`` or ``view.spec``.

A background thread reads ahead (``config.prefetch`` batches, see
:mod:`~crystalgrid.models.training.loader`). With ``precision="auto"`` the step runs under
bf16 autocast where the processor runs bf16 natively (a GPU, a CPU with AVX512-BF16 or AMX) and
in fp32 elsewhere; ``torch.compile`` on CUDA unless the config says otherwise
(:mod:`~crystalgrid.models.runtime`).

Files written in ``out_dir``:

- ``log.jsonl``: one JSON record per line; ``kind`` is ``start`` (config, device, the
  precision actually used and the CPU's capability, sizes),
  ``step`` (every ``log_every`` steps: mean loss terms over the window, samples/s), ``epoch``
  (train means, validation loss terms and voxel accuracies, time) or ``stop`` (``max_steps``
  reached mid-epoch).
- ``last.pt``: the latest checkpoint (every epoch end, every ``checkpoint_every`` steps, at
  the stop); ``best.pt``: the one with the lowest validation loss
  (:mod:`~crystalgrid.models.checkpoint`).

With ``config.vae_stage`` the run has two stages (see :class:`TrainConfig`): the first
``stage_boundary`` steps train the VAE alone, the rest the U-Net alone on the frozen VAE's
reconstructions; each stage has its own learning-rate schedule. With ``config.augment ==
"cube"`` each batch is mapped by random symmetries of the cube
(:mod:`~crystalgrid.models.training.augment`) on the device.

Resuming restores the networks, the optimiser, the position and the RNG states, skips the
batches of the interrupted epoch already seen (same seeded shuffle), drops log records past
the checkpoint's step and appends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crystalgrid.contracts import ViewLike, iter_view
from crystalgrid.errors import CrystalgridError
from crystalgrid.models.checkpoint import save_checkpoint
from crystalgrid.models.config import TrainConfig
from crystalgrid.models.nets.classes import ClassMap
from crystalgrid.models.nets.model import ReferenceModel
from crystalgrid.models.runtime import Runtime, resolve_runtime
from crystalgrid.models.training.loader import TRAIN_FIELDS, device_batches, scan_species
from crystalgrid.models.training.log import RunLog, RunningMeans, epoch_line, finite, read_log
from crystalgrid.models.training.resume import Position, checkpoint_to_resume, restore
from crystalgrid.models.training.schedule import learning_rate, stage_boundary
from crystalgrid.models.training.step import make_optimizer, train_step
from crystalgrid.spec import GridSpec

# learning_rate, stage_boundary and read_log live in their modules; the loop re-exports them.
__all__ = ["learning_rate", "read_log", "stage_boundary", "train", "validation_loss"]


def validation_loss(
    model: ReferenceModel,
    view: ViewLike,
    runtime: Runtime,
    *,
    batch_size: int,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Mean loss terms and voxel accuracies over a split (posterior means, eval mode).

    Returns:
        ``{"loss", "mse", "kl", "ce", "acc", "acc_atoms", "samples"}``, sample-weighted means.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        source = iter_view(view, batch_size, fields=TRAIN_FIELDS)
        for i, (density, species) in enumerate(device_batches(source, runtime, prefetch=0)):
            if max_batches is not None and i >= max_batches:
                break
            with runtime.autocast():
                out = model(density, species)
            b = density.shape[0]
            for key, value in out.items():
                sums[key] = sums.get(key, 0.0) + float(value) * b
            n += b
    model.train(was_training)
    result = {key: value / n for key, value in sums.items()} if n else {}
    result["samples"] = n
    return result


def _spec_of(view: ViewLike, spec: GridSpec | None) -> GridSpec:
    if spec is not None:
        return spec
    found = getattr(view, "spec", None)
    if found is None:
        found = getattr(getattr(view, "dataset", None), "spec", None)
    if not isinstance(found, GridSpec):
        raise CrystalgridError("pass spec=GridSpec(...): the training view has no .spec")
    return found


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _run_metadata(
    metadata: dict[str, Any] | None,
    ckpt: dict[str, Any] | None,
    config: TrainConfig,
    view_train: ViewLike,
) -> dict[str, Any]:
    """The user's metadata; a conditional run adds its condition calibration."""
    meta = dict(metadata or {})
    if config.conditional and "condition_calibration" not in meta:
        # What largest scaled density (the condition) goes with which largest atomic
        # number, so a conditional checkpoint can be asked for a Z.
        saved = (ckpt or {}).get("metadata") or {}
        if "condition_calibration" in saved:
            meta["condition_calibration"] = saved["condition_calibration"]
        else:
            from crystalgrid.models.latent.conditioning import condition_calibration

            meta["condition_calibration"] = condition_calibration(
                view_train, density_scale=config.density_scale
            )
    return meta


@dataclass
class _Run:
    """What one training run holds while it goes: networks, optimiser, position, files."""

    config: TrainConfig
    spec: GridSpec
    runtime: Runtime
    model: ReferenceModel
    optimizer: torch.optim.Optimizer
    forward: Callable[..., dict[str, torch.Tensor]]
    pos: Position
    log: RunLog
    out_dir: Path
    metadata: dict[str, Any]
    steps_per_epoch: int
    total_steps: int
    boundary: int
    #: The loss terms since the last step record (it spans epochs, as the records do).
    window: RunningMeans

    def save(self, path: Path) -> None:
        save_checkpoint(
            path,
            self.model,
            spec=self.spec,
            optimizer=self.optimizer,
            epoch=self.pos.epoch,
            step=self.pos.step,
            batch_in_epoch=self.pos.batch_in_epoch,
            best_val=self.pos.best_val,
            metadata=self.metadata,
        )

    @property
    def stopped(self) -> bool:
        return self.config.max_steps is not None and self.pos.step >= self.config.max_steps


def train(
    config: TrainConfig,
    view_train: ViewLike,
    view_val: ViewLike | None = None,
    *,
    out_dir: str | Path,
    resume: str | Path | None = None,
    quiet: bool = False,
    spec: GridSpec | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Train the VAE and the U-Net; checkpoint, log, and return the last checkpoint.

    Args:
        config: the full configuration (saved in every checkpoint). When resuming, the
            fields that define the networks and the loss
            (:meth:`~crystalgrid.models.config.TrainConfig.frozen_on_resume`) must match the
            checkpoint's; the others (epochs, max_steps, device, precision, ...) may change.
        view_train: the training split (see :class:`~crystalgrid.contracts.ViewLike`).
        view_val: the validation split, scored at the end of each epoch; ``None``: skipped.
        out_dir: where ``log.jsonl``, ``last.pt`` and ``best.pt`` go (created).
        resume: a checkpoint to continue from.
        quiet: no progress bar.
        spec: the grid geometry; default ``view_train.spec``.
        metadata: JSON-ready facts stored in the checkpoints (e.g. the data path). A
            conditional run adds ``condition_calibration`` (largest atomic number -> largest
            scaled density on the training split, see
            :func:`crystalgrid.models.latent.conditioning.condition_calibration`).

    Returns:
        The path of the last checkpoint written (``out_dir / "last.pt"``).

    Raises:
        CrystalgridError: for a split smaller than one batch, a mismatched resume, or a
            device that is not there.
    """
    from tqdm.auto import tqdm

    run = _start(config, view_train, view_val, Path(out_dir), resume, spec, metadata)
    if (run.stopped or run.pos.epoch >= run.config.epochs) and not quiet:
        tqdm.write(
            f"nothing to train: at epoch {run.pos.epoch}, step {run.pos.step} "
            f"(epochs={run.config.epochs}, max_steps={run.config.max_steps}); "
            "raise --epochs or --max-steps to go on"
        )
    last = run.out_dir / "last.pt"
    try:
        while run.pos.epoch < run.config.epochs and not run.stopped:
            means = _train_epoch(run, view_train, quiet=quiet)
            record = _end_epoch(run, view_val, means)
            if not quiet:
                tqdm.write(epoch_line(record))
    finally:
        run.log.close()
    if not last.exists():  # nothing to train (e.g. resumed after the last epoch)
        run.save(last)
    return last


def _start(
    config: TrainConfig,
    view_train: ViewLike,
    view_val: ViewLike | None,
    out_dir: Path,
    resume: str | Path | None,
    spec: GridSpec | None,
    metadata: dict[str, Any] | None,
) -> _Run:
    """Set a run up: networks (new or resumed), optimiser, schedule, log (its start record)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = _spec_of(view_train, spec)
    runtime = resolve_runtime(config.device, config.precision, config.compile)
    steps_per_epoch = len(view_train) // config.batch_size
    if steps_per_epoch == 0:
        raise CrystalgridError(
            f"the training split has {len(view_train)} samples, fewer than one batch "
            f"of {config.batch_size}"
        )
    ckpt = checkpoint_to_resume(resume, out_dir, config, spec)
    if ckpt is not None:
        class_map = ClassMap(ckpt["classes"])
    elif config.classes is not None:
        class_map = ClassMap(config.classes)
    else:
        class_map = scan_species(view_train)
    config = config.with_overrides(classes=class_map.species)
    if ckpt is None:
        _seed_all(config.seed)
    model = runtime.place(ReferenceModel(config, spec.bins, class_map))
    optimizer = make_optimizer(model, config)
    cuda = runtime.device.type == "cuda"
    pos = Position() if ckpt is None else restore(ckpt, model, optimizer, config, str(resume), cuda)
    if cuda:
        torch.backends.cudnn.benchmark = True
    forward: Callable[..., dict[str, torch.Tensor]] = (
        torch.compile(model) if runtime.compile else model  # type: ignore[assignment]
    )
    model.train()
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    meta = _run_metadata(metadata, ckpt, config, view_train)
    log = RunLog(out_dir / "log.jsonl", keep_until_step=pos.step if ckpt is not None else None)
    log.write(
        {
            "kind": "start",
            "step": pos.step,
            "epoch": pos.epoch,
            "time": time.time(),
            "resumed_from": str(resume) if resume is not None else None,
            "runtime": runtime.describe(),
            "precision": runtime.precision,
            "cpu_capability": runtime.cpu_capability,
            "parameters": model.n_parameters(),
            "train_samples": len(view_train),
            "val_samples": len(view_val) if view_val is not None else 0,
            "steps_per_epoch": steps_per_epoch,
            "classes": class_map.to_list(),
            "config": config.to_dict(),
            "metadata": meta,
        }
    )
    return _Run(
        config=config,
        spec=spec,
        runtime=runtime,
        model=model,
        optimizer=optimizer,
        forward=forward,
        pos=pos,
        log=log,
        out_dir=out_dir,
        metadata=meta,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        boundary=stage_boundary(config, total_steps),
        window=RunningMeans(),
    )


def _train_epoch(run: _Run, view_train: ViewLike, *, quiet: bool) -> RunningMeans:
    """The steps of the current epoch (from where a resumed run stopped), a step record every
    ``log_every`` steps; returns the epoch's running means."""
    from tqdm.auto import tqdm

    config, pos = run.config, run.pos
    source = iter_view(
        view_train,
        config.batch_size,
        fields=TRAIN_FIELDS,
        shuffle=True,
        seed=config.seed + pos.epoch,
        drop_last=True,
    )
    for _ in range(pos.batch_in_epoch):  # resume mid-epoch: skip what was already used
        next(source)
    epoch_means = RunningMeans()
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=pos.batch_in_epoch,
        desc=f"epoch {pos.epoch + 1}/{config.epochs}",
        disable=quiet,
        leave=False,
    )
    for density, species in device_batches(source, run.runtime, config.prefetch):
        out, lr = train_step(
            run.model,
            run.forward,
            run.optimizer,
            config,
            run.runtime,
            density,
            species,
            step=pos.step,
            total_steps=run.total_steps,
            boundary=run.boundary,
        )
        pos.step += 1
        pos.batch_in_epoch += 1
        run.window.add(out)
        epoch_means.add(out)
        bar.update(1)
        if pos.step % config.log_every == 0:
            means = run.window.means()
            run.log.write(
                {
                    "kind": "step",
                    "step": pos.step,
                    "epoch": pos.epoch,
                    **means,
                    "lr": lr,
                    "samples_per_s": run.window.samples_per_s(config.batch_size),
                    "time": time.time(),
                }
            )
            loss = means["loss"]
            bar.set_postfix(loss=f"{loss:.4g}" if loss is not None else "nan")
            run.window = RunningMeans()
        if config.checkpoint_every and pos.step % config.checkpoint_every == 0:
            run.save(run.out_dir / "last.pt")
        if run.stopped:
            break
    bar.close()
    return epoch_means


def _end_epoch(run: _Run, view_val: ViewLike | None, means: RunningMeans) -> dict[str, Any]:
    """Validation, the epoch (or stop) record, ``last.pt`` and (if better) ``best.pt``."""
    config, pos = run.config, run.pos
    val: dict[str, float] = {}
    if view_val is not None and len(view_val):
        val = validation_loss(
            run.model,
            view_val,
            run.runtime,
            batch_size=config.batch_size,
            max_batches=config.val_max_batches,
        )
    record = {
        "kind": "stop" if run.stopped and pos.batch_in_epoch < run.steps_per_epoch else "epoch",
        "epoch": pos.epoch,
        "step": pos.step,
        **means.means("train_"),
        **{f"val_{k}": finite(v) if isinstance(v, float) else v for k, v in val.items()},
        "epoch_time_s": time.perf_counter() - means.t0,
        "samples_per_s": means.samples_per_s(config.batch_size),
        "time": time.time(),
    }
    if record["kind"] == "epoch":
        pos.epoch += 1
        pos.batch_in_epoch = 0
    val_loss = val.get("loss", math.inf)
    improved = math.isfinite(val_loss) and val_loss < pos.best_val
    if improved:
        pos.best_val = val_loss
    run.log.write(record)
    run.save(run.out_dir / "last.pt")
    if improved:
        run.save(run.out_dir / "best.pt")
    return record
