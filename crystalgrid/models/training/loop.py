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

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crystalgrid.contracts import ViewLike, iter_view
from crystalgrid.errors import CrystalgridError
from crystalgrid.fileio import write_atomic
from crystalgrid.jsonio import jsonable
from crystalgrid.models.checkpoint import read_checkpoint, restore_rng_state, save_checkpoint
from crystalgrid.models.config import TrainConfig
from crystalgrid.models.nets.classes import ClassMap
from crystalgrid.models.nets.model import ReferenceModel
from crystalgrid.models.runtime import Runtime, resolve_runtime
from crystalgrid.models.training.augment import apply_cube_symmetry, cube_symmetries
from crystalgrid.models.training.loader import TRAIN_FIELDS, device_batches, scan_species
from crystalgrid.models.training.schedule import learning_rate, stage_boundary
from crystalgrid.spec import GridSpec

# learning_rate and stage_boundary live in training.schedule; the loop re-exports them.
__all__ = ["learning_rate", "read_log", "stage_boundary", "train", "validation_loss"]

# Fields that define the networks and the loss: a resumed run must keep them.
_FROZEN_ON_RESUME = (
    "latent_dim",
    "latent_kind",
    "encoder_channels",
    "decoder_channels",
    "unet_base_channels",
    "unet_levels",
    "conditional",
    "output_activation",
    "density_scale",
    "beta",
    "gamma",
    "ce_into_decoder",
    "atom_weight",
    "unet_input",
    "input_norm",
    "vae_stage",
    "augment",
    "head",
    "batch_size",
    "seed",
)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``log.jsonl``.

    A last line cut short (the process killed while writing it) is left out; any other line
    that is not a JSON record means the log was damaged or edited, and is an error.

    Raises:
        CrystalgridError: naming the file and the line.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break  # a torn last line
            raise CrystalgridError(
                f"{path}: line {number} is not a log record ({exc.msg}); the log is damaged"
            ) from None
        if not isinstance(record, dict):
            raise CrystalgridError(f"{path}: line {number} is not a log record")
        records.append(record)
    return records


class _Log:
    """Append-only JSONL log; on resume, records past the checkpoint's step are dropped."""

    def __init__(self, path: Path, *, keep_until_step: int | None) -> None:
        self.path = path
        if keep_until_step is not None and path.exists():
            kept = [
                json.dumps(record, allow_nan=False, default=jsonable)
                for record in read_log(path)
                if record.get("step", 0) <= keep_until_step
            ]
            write_atomic(path, "".join(line + "\n" for line in kept).encode())
        elif keep_until_step is None and path.exists():
            path.unlink()
        self._fh = open(path, "a")  # noqa: SIM115 - closed by close()

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, allow_nan=False, default=jsonable) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


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


@dataclass
class _Position:
    """Where a run stands: completed epochs, optimiser steps, batches of the current epoch."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best_val: float = math.inf


class _RunningMeans:
    """Sums of the loss terms over steps (kept as tensors: no device sync per step).

    Each term is averaged over the steps that reported it (a VAE-only step has no ``ce``).
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.steps = 0
        self.t0 = time.perf_counter()

    def add(self, out: dict[str, torch.Tensor]) -> None:
        for key, value in out.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().float()
            self.counts[key] = self.counts.get(key, 0) + 1
        self.steps += 1

    def means(self, prefix: str = "") -> dict[str, float | None]:
        """The mean of each term (``None`` where not finite)."""
        return {f"{prefix}{k}": _finite(float(v) / self.counts[k]) for k, v in self.sums.items()}

    def samples_per_s(self, batch_size: int) -> float | None:
        seconds = time.perf_counter() - self.t0
        return self.steps * batch_size / seconds if seconds > 0 else None


def _optimizer(model: ReferenceModel, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over two groups (VAE, U-Net); each group's lr is ``lr * lr_scale``."""
    return torch.optim.Adam(
        [
            {"params": model.vae.parameters(), "lr_scale": 1.0},
            {"params": model.unet.parameters(), "lr_scale": config.unet_lr_scale},
        ],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )


def _checkpoint_to_resume(
    resume: str | Path | None, out_dir: Path, config: TrainConfig, spec: GridSpec
) -> dict[str, Any] | None:
    """The checkpoint to resume from, checked against the new run's config and spec."""
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
    changed = [k for k in _FROZEN_ON_RESUME if getattr(saved, k) != getattr(config, k)]
    if changed:
        raise CrystalgridError(
            f"cannot resume {resume} with a different {', '.join(changed)}; "
            "start a new run or keep the checkpoint's values"
        )
    if GridSpec.from_dict(ckpt["spec"]) != spec:
        raise CrystalgridError(f"{resume} was trained on a different grid spec")
    return ckpt


def _restore(
    ckpt: dict[str, Any],
    model: ReferenceModel,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    resume: str | Path,
    cuda: bool,
) -> _Position:
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
            stacklevel=3,
        )
    return _Position(
        epoch=int(ckpt["epoch"]),
        step=int(ckpt["step"]),
        batch_in_epoch=int(ckpt["batch_in_epoch"]),
        best_val=float(ckpt.get("best_val", math.inf)),
    )


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
    """Train the VAE and the U-Net jointly; checkpoint, log, and return the last checkpoint.

    Args:
        config: the full configuration (saved in every checkpoint). When resuming, the
            fields that define the networks and the loss must match the checkpoint's; the
            others (epochs, max_steps, device, precision, ...) may change.
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

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = _spec_of(view_train, spec)
    runtime = resolve_runtime(config.device, config.precision, config.compile)
    steps_per_epoch = len(view_train) // config.batch_size
    if steps_per_epoch == 0:
        raise CrystalgridError(
            f"the training split has {len(view_train)} samples, fewer than one batch "
            f"of {config.batch_size}"
        )
    ckpt = _checkpoint_to_resume(resume, out_dir, config, spec)
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
    optimizer = _optimizer(model, config)
    pos = (
        _Position()
        if ckpt is None
        else _restore(
            ckpt, model, optimizer, config, str(resume), cuda=runtime.device.type == "cuda"
        )
    )
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    step_fn: Callable[..., dict[str, torch.Tensor]] = (
        torch.compile(model) if runtime.compile else model  # type: ignore[assignment]
    )
    model.train()
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    boundary = stage_boundary(config, total_steps)
    meta = _run_metadata(metadata, ckpt, config, view_train)
    log = _Log(out_dir / "log.jsonl", keep_until_step=pos.step if ckpt is not None else None)
    last = out_dir / "last.pt"

    def save(path: Path) -> None:
        save_checkpoint(
            path,
            model,
            spec=spec,
            optimizer=optimizer,
            epoch=pos.epoch,
            step=pos.step,
            batch_in_epoch=pos.batch_in_epoch,
            best_val=pos.best_val,
            metadata=meta,
        )

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
    stopped = config.max_steps is not None and pos.step >= config.max_steps
    if (stopped or pos.epoch >= config.epochs) and not quiet:
        tqdm.write(
            f"nothing to train: at epoch {pos.epoch}, step {pos.step} (epochs={config.epochs}, "
            f"max_steps={config.max_steps}); raise --epochs or --max-steps to go on"
        )
    window = _RunningMeans()
    try:
        while pos.epoch < config.epochs and not stopped:
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
            epoch_means = _RunningMeans()
            bar = tqdm(
                total=steps_per_epoch,
                initial=pos.batch_in_epoch,
                desc=f"epoch {pos.epoch + 1}/{config.epochs}",
                disable=quiet,
                leave=False,
            )
            for density, species in device_batches(source, runtime, config.prefetch):
                stage = _enter_stage(model, pos.step, boundary)
                if config.augment == "cube":
                    symmetry = cube_symmetries(len(density), seed=config.seed, step=pos.step)
                    density = apply_cube_symmetry(density, symmetry)
                    species = apply_cube_symmetry(species, symmetry)
                with runtime.autocast():
                    out = step_fn(density, species, stage)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                lr = learning_rate(config, pos.step, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                optimizer.step()
                pos.step += 1
                pos.batch_in_epoch += 1
                window.add(out)
                epoch_means.add(out)
                bar.update(1)
                if pos.step % config.log_every == 0:
                    means = window.means()
                    log.write(
                        {
                            "kind": "step",
                            "step": pos.step,
                            "epoch": pos.epoch,
                            **means,
                            "lr": lr,
                            "samples_per_s": window.samples_per_s(config.batch_size),
                            "time": time.time(),
                        }
                    )
                    loss = means["loss"]
                    bar.set_postfix(loss=f"{loss:.4g}" if loss is not None else "nan")
                    window = _RunningMeans()
                if config.checkpoint_every and pos.step % config.checkpoint_every == 0:
                    save(last)
                if config.max_steps is not None and pos.step >= config.max_steps:
                    stopped = True
                    break
            bar.close()
            val: dict[str, float] = {}
            if view_val is not None and len(view_val):
                val = validation_loss(
                    model,
                    view_val,
                    runtime,
                    batch_size=config.batch_size,
                    max_batches=config.val_max_batches,
                )
            record = {
                "kind": "stop" if stopped and pos.batch_in_epoch < steps_per_epoch else "epoch",
                "epoch": pos.epoch,
                "step": pos.step,
                **epoch_means.means("train_"),
                **{f"val_{k}": _finite(v) if isinstance(v, float) else v for k, v in val.items()},
                "epoch_time_s": time.perf_counter() - epoch_means.t0,
                "samples_per_s": epoch_means.samples_per_s(config.batch_size),
                "time": time.time(),
            }
            if record["kind"] == "epoch":
                pos.epoch += 1
                pos.batch_in_epoch = 0
            val_loss = val.get("loss", math.inf)
            improved = math.isfinite(val_loss) and val_loss < pos.best_val
            if improved:
                pos.best_val = val_loss
            log.write(record)
            save(last)
            if improved:
                save(out_dir / "best.pt")
            if not quiet:
                tqdm.write(_epoch_line(record))
    finally:
        log.close()
    if not last.exists():  # nothing to train (e.g. resumed after the last epoch)
        save(last)
    return last


def _enter_stage(model: ReferenceModel, step: int, boundary: int) -> str:
    """The stage of step ``step``; at the U-Net stage the VAE is frozen (eval mode, no grad)."""
    if not boundary:
        return "joint"
    if step < boundary:
        return "vae"
    if model.vae.training:
        model.vae.eval()
        model.vae.requires_grad_(False)
    return "unet"


def _epoch_line(record: dict[str, Any]) -> str:
    parts = [
        f"{record['kind']} {record['epoch'] + (record['kind'] == 'epoch')}",
        f"step {record['step']}",
    ]
    for key in ("train_loss", "val_loss", "val_acc_atoms"):
        if record.get(key) is not None:
            parts.append(f"{key} {record[key]:.4g}")
    if record.get("samples_per_s"):
        parts.append(f"{record['samples_per_s']:.0f} samples/s")
    return ", ".join(parts)
