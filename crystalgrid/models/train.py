"""Training of the reference model: a DataLoader-free loop over any "view-like" split.

The trainer needs only this of a split (what ``crystalgrid.open_dataset(path).split(name)``
returns): ``len(view)`` and ``view.iter_batches(batch_size, shuffle=, seed=, drop_last=)``
yielding dicts with ``"density"`` ``(B, n, n, n)`` float32 (Å^-3) and ``"species"``
``(B, n, n, n)`` uint8. The grid geometry comes from ``spec=`` or ``view.spec``.

A background thread reads ahead (``config.prefetch`` batches) and pins host memory on CUDA, so
reading overlaps the GPU's work; batches move with ``non_blocking=True``. On CUDA the step
runs under bf16 autocast and ``torch.compile`` unless the config says otherwise.

Files written in ``out_dir``:

- ``log.jsonl``: one JSON record per line; ``kind`` is ``start`` (config, device, sizes),
  ``step`` (every ``log_every`` steps: mean loss terms over the window, samples/s), ``epoch``
  (train means, validation loss terms and voxel accuracies, time) or ``stop`` (``max_steps``
  reached mid-epoch).
- ``last.pt``: the latest checkpoint (every epoch end, every ``checkpoint_every`` steps, at
  the stop); ``best.pt``: the one with the lowest validation loss. Written atomically.

A checkpoint holds the networks, the optimiser, the config, the class map, the grid spec,
the position (epoch, step, batch within the epoch), the torch RNG states and user metadata.
Resuming restores all of it, skips the batches of the interrupted epoch already seen (same
seeded shuffle), drops log records past the checkpoint's step and appends.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import pickle
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from crystalgrid.errors import CrystalgridError
from crystalgrid.models.config import TrainConfig
from crystalgrid.models.decode import ClassMap
from crystalgrid.models.losses import ReferenceModel
from crystalgrid.spec import GridSpec

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "Runtime",
    "ViewLike",
    "checkpoint_config",
    "iter_training_batches",
    "learning_rate",
    "load_checkpoint",
    "measure_loader",
    "resolve_runtime",
    "save_checkpoint",
    "scan_species",
    "train",
    "validation_loss",
]

CHECKPOINT_FORMAT = "crystalgrid.models/vae-unet/1"

# Fields that define the networks and the loss: a resumed run must keep them.
_FROZEN_ON_RESUME = (
    "latent_dim",
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
    "batch_size",
    "seed",
)


class ViewLike(Protocol):
    """What the trainer needs of a dataset split."""

    def __len__(self) -> int: ...

    def iter_batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False
    ) -> Iterator[dict[str, Any]]: ...


# ---- device, precision, compilation --------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """Where and how the step runs.

    Attributes:
        device: the torch device.
        amp_dtype: autocast dtype (``torch.bfloat16``) or ``None`` for fp32.
        compile: whether the step is compiled.
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    compile: bool

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of this runtime (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        """A short human-readable name, e.g. ``cuda (NVIDIA H100 80GB HBM3), bf16, compiled``."""
        name = self.device.type
        if self.device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(self.device)})"
        prec = "bf16 autocast" if self.amp_dtype is not None else "fp32"
        return f"{name}, {prec}, {'compiled' if self.compile else 'eager'}"


def resolve_runtime(
    device: str = "auto", precision: str = "auto", compile: bool | None = None
) -> Runtime:
    """Turn the config's ``device``/``precision``/``compile`` into a :class:`Runtime`.

    ``"auto"`` means CUDA when available, bf16 autocast on CUDA (fp32 on CPU), and
    ``torch.compile`` on CUDA only.

    Raises:
        CrystalgridError: for a CUDA device on a machine without one, or an unknown precision.
    """
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise CrystalgridError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CrystalgridError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    if precision == "auto":
        amp = torch.bfloat16 if dev.type == "cuda" else None
    elif precision == "bf16":
        amp = torch.bfloat16
    elif precision == "fp32":
        amp = None
    else:
        raise CrystalgridError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    return Runtime(dev, amp, dev.type == "cuda" if compile is None else bool(compile))


# ---- batches -------------------------------------------------------------------------------


_TRAIN_FIELDS = ("density", "species")


def iter_training_batches(
    view: ViewLike, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool
) -> Iterator[dict[str, Any]]:
    """``view.iter_batches`` asking only for the grids when the view can skip the rest.

    crystalgrid's views take ``fields=``; reading density and species alone is their fast
    path. Other view-like objects are called without it.
    """
    kwargs: dict[str, Any] = {"shuffle": shuffle, "seed": seed, "drop_last": drop_last}
    try:
        params = inspect.signature(view.iter_batches).parameters
    except (TypeError, ValueError):
        params = {}
    if "fields" in params:
        kwargs["fields"] = _TRAIN_FIELDS
    return view.iter_batches(batch_size, **kwargs)


def _to_tensors(batch: dict[str, Any], pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
    density = torch.from_numpy(np.ascontiguousarray(batch["density"], dtype=np.float32))
    species = torch.from_numpy(np.ascontiguousarray(batch["species"], dtype=np.uint8))
    if pin:
        density, species = density.pin_memory(), species.pin_memory()
    return density, species


class _Prefetcher:
    """Reads batches from an iterator in a daemon thread, ``depth`` ahead."""

    _DONE = object()

    def __init__(self, source: Iterator[Any], convert: Callable[[Any], Any], depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source, convert), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterator[Any], convert: Callable[[Any], Any]) -> None:
        try:
            for item in source:
                if not self._put(convert(item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer and re-raised there
            self._put(exc)
            return
        self._put(self._DONE)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _batches(
    source: Iterator[dict[str, Any]], runtime: Runtime, prefetch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    pin = runtime.device.type == "cuda"
    dev = runtime.device

    def move(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return pair[0].to(dev, non_blocking=pin), pair[1].to(dev, non_blocking=pin)

    if prefetch == 0:
        for batch in source:
            yield move(_to_tensors(batch, pin))
        return
    fetcher = _Prefetcher(source, lambda b: _to_tensors(b, pin), prefetch)
    try:
        for pair in fetcher:
            yield move(pair)
    finally:
        fetcher.close()


def measure_loader(
    view: ViewLike,
    batch_size: int = 128,
    *,
    n_batches: int = 50,
    shuffle: bool = True,
    seed: int = 0,
    to_torch: bool = True,
) -> dict[str, float]:
    """How fast a split delivers training batches (the loader alone, no model).

    Args:
        view: the split.
        batch_size: samples per batch.
        n_batches: batches to time (after one untimed warm-up batch).
        shuffle, seed: as in training.
        to_torch: include the numpy -> torch conversion (pinned when CUDA is present).

    Returns:
        ``{"samples_per_s", "batches", "samples", "seconds"}``.
    """
    pin = to_torch and torch.cuda.is_available()
    it = iter_training_batches(view, batch_size, shuffle=shuffle, seed=seed, drop_last=True)
    first = next(it, None)
    if first is None:
        raise CrystalgridError(f"the split has fewer than {batch_size} samples")
    samples = batches = 0
    t0 = time.perf_counter()
    for batch in it:
        if to_torch:
            _to_tensors(batch, pin)
        samples += len(batch["density"])
        batches += 1
        if batches >= n_batches:
            break
    seconds = time.perf_counter() - t0
    return {
        "samples_per_s": samples / seconds if seconds > 0 else math.inf,
        "batches": batches,
        "samples": samples,
        "seconds": seconds,
    }


def scan_species(view: ViewLike, *, batch_size: int = 256) -> ClassMap:
    """The class map of the species present in a split's species grids (one pass).

    Raises:
        CrystalgridError: if the split has no atom at all.
    """
    seen = np.zeros(256, dtype=bool)
    for batch in iter_training_batches(view, batch_size, shuffle=False, drop_last=False):
        seen[np.unique(np.asarray(batch["species"]))] = True
    seen[0] = False
    if not seen.any():
        raise CrystalgridError("the training split has no atoms in its species grids")
    return ClassMap(np.flatnonzero(seen))


# ---- checkpoints ---------------------------------------------------------------------------


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CrystalgridError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrystalgridError(f"{path} is not a readable checkpoint: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CrystalgridError(f"{path} is not a crystalgrid reference-model checkpoint")
    # Checkpoints written before the output activation was a setting had the paper's ReLU.
    ckpt["config"].setdefault("output_activation", "relu")
    return ckpt


def save_checkpoint(
    path: str | Path,
    model: ReferenceModel,
    *,
    spec: GridSpec,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    step: int = 0,
    batch_in_epoch: int = 0,
    best_val: float = math.inf,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename).

    Args:
        path: the file to write.
        model: the networks; their config and class map are stored with them.
        spec: the grid geometry the model works on.
        optimizer: its state, for resuming (``None``: not resumable, still loadable).
        epoch, step, batch_in_epoch: the training position.
        best_val: the lowest validation loss so far.
        metadata: JSON-ready facts to keep (data path, representation, ...).

    Returns:
        ``path``.
    """
    path = Path(path)
    _atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": model.config.to_dict(),
            "classes": model.class_map.to_list(),
            "spec": spec.to_dict(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict() if optimizer is not None else {},
            "epoch": int(epoch),
            "step": int(step),
            "batch_in_epoch": int(batch_in_epoch),
            "best_val": float(best_val),
            "rng": _rng_state(),
            "metadata": dict(metadata or {}),
            "versions": {"torch": str(torch.__version__), "crystalgrid": _version()},
        },
        path,
    )
    return path


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        model: the networks, in eval mode, on the requested device.
        config: the training configuration.
        class_map: the U-Net's classes.
        spec: the grid geometry the model was trained on.
        epoch: completed epochs; step: optimiser steps; batch_in_epoch: batches of the
            current epoch already used.
        metadata: what the trainer was given (data path, representation, ...).
        path: where it was read from.
    """

    model: ReferenceModel
    config: TrainConfig
    class_map: ClassMap
    spec: GridSpec
    epoch: int
    step: int
    batch_in_epoch: int
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def checkpoint_config(path: str | Path) -> TrainConfig:
    """The training configuration stored in a checkpoint.

    Raises:
        CrystalgridError: if the file is missing or is not such a checkpoint.
    """
    return TrainConfig.from_dict(_read_checkpoint(path)["config"])


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint written by :func:`train` (weights only: no code is unpickled).

    Raises:
        CrystalgridError: if the file is missing or is not such a checkpoint.
    """
    ckpt = _read_checkpoint(path)
    config = TrainConfig.from_dict(ckpt["config"])
    class_map = ClassMap(ckpt["classes"])
    spec = GridSpec.from_dict(ckpt["spec"])
    model = ReferenceModel(config, spec.bins, class_map)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return Checkpoint(
        model=model,
        config=config,
        class_map=class_map,
        spec=spec,
        epoch=int(ckpt["epoch"]),
        step=int(ckpt["step"]),
        batch_in_epoch=int(ckpt["batch_in_epoch"]),
        metadata=dict(ckpt.get("metadata") or {}),
        path=Path(path),
    )


# ---- log -----------------------------------------------------------------------------------


class _Log:
    """Append-only JSONL log; on resume, records past the checkpoint's step are dropped."""

    def __init__(self, path: Path, *, keep_until_step: int | None) -> None:
        self.path = path
        if keep_until_step is not None and path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if record.get("step", 0) <= keep_until_step:
                    kept.append(line)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)
        elif keep_until_step is None and path.exists():
            path.unlink()
        self._fh = open(path, "a")  # noqa: SIM115 - closed by close()

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, allow_nan=False, default=_jsonable) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# ---- validation ----------------------------------------------------------------------------


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
        source = iter_training_batches(view, batch_size, shuffle=False, drop_last=False)
        for i, (density, species) in enumerate(_batches(source, runtime, prefetch=0)):
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


# ---- training ------------------------------------------------------------------------------


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


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):  # fewer GPUs than when saved
            torch.cuda.set_rng_state_all(state["cuda"])


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
        view_train: the training split (see :class:`ViewLike`).
        view_val: the validation split, scored at the end of each epoch; ``None``: skipped.
        out_dir: where ``log.jsonl``, ``last.pt`` and ``best.pt`` go (created).
        resume: a checkpoint to continue from.
        quiet: no progress bar.
        spec: the grid geometry; default ``view_train.spec``.
        metadata: JSON-ready facts stored in the checkpoints (e.g. the data path). A
            conditional run adds ``condition_calibration`` (largest atomic number -> largest
            scaled density on the training split, see
            :func:`crystalgrid.models.generate.condition_calibration`).

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

    ckpt: dict[str, Any] | None = None
    if resume is None and (out_dir / "last.pt").exists():
        raise CrystalgridError(
            f"{out_dir} already holds a run (last.pt); resume it or choose another output folder"
        )
    if resume is not None:
        ckpt = _read_checkpoint(resume)
        saved = TrainConfig.from_dict(ckpt["config"])
        changed = [k for k in _FROZEN_ON_RESUME if getattr(saved, k) != getattr(config, k)]
        if changed:
            raise CrystalgridError(
                f"cannot resume {resume} with a different {', '.join(changed)}; "
                "start a new run or keep the checkpoint's values"
            )
        if GridSpec.from_dict(ckpt["spec"]) != spec:
            raise CrystalgridError(f"{resume} was trained on a different grid spec")
        class_map = ClassMap(ckpt["classes"])
    elif config.classes is not None:
        class_map = ClassMap(config.classes)
    else:
        class_map = scan_species(view_train)
    config = config.with_overrides(classes=class_map.species)

    if ckpt is None:
        _seed_all(config.seed)
    model = ReferenceModel(config, spec.bins, class_map).to(runtime.device)
    optimizer = torch.optim.Adam(
        [
            {"params": model.vae.parameters(), "lr_scale": 1.0},
            {"params": model.unet.parameters(), "lr_scale": config.unet_lr_scale},
        ],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    epoch = step = batch_in_epoch = 0
    best_val = math.inf
    if ckpt is not None:
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
        epoch, step, batch_in_epoch = (
            int(ckpt["epoch"]),
            int(ckpt["step"]),
            int(ckpt["batch_in_epoch"]),
        )
        best_val = float(ckpt.get("best_val", math.inf))
        _set_rng_state(ckpt["rng"])
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    step_fn: Callable[..., dict[str, torch.Tensor]] = (
        torch.compile(model) if runtime.compile else model  # type: ignore[assignment]
    )
    model.train()
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    meta = dict(metadata or {})
    if config.conditional and "condition_calibration" not in meta:
        # What largest scaled density (the condition) goes with which largest atomic
        # number, so a conditional checkpoint can be asked for a Z (models/generate.py).
        saved = (ckpt or {}).get("metadata") or {}
        if "condition_calibration" in saved:
            meta["condition_calibration"] = saved["condition_calibration"]
        else:
            from crystalgrid.models.generate import condition_calibration

            meta["condition_calibration"] = condition_calibration(
                view_train, density_scale=config.density_scale
            )
    log = _Log(out_dir / "log.jsonl", keep_until_step=step if ckpt is not None else None)

    def save(path: Path) -> None:
        save_checkpoint(
            path,
            model,
            spec=spec,
            optimizer=optimizer,
            epoch=epoch,
            step=step,
            batch_in_epoch=batch_in_epoch,
            best_val=best_val,
            metadata=meta,
        )

    last = out_dir / "last.pt"
    log.write(
        {
            "kind": "start",
            "step": step,
            "epoch": epoch,
            "time": time.time(),
            "resumed_from": str(resume) if resume is not None else None,
            "runtime": runtime.describe(),
            "parameters": model.n_parameters(),
            "train_samples": len(view_train),
            "val_samples": len(view_val) if view_val is not None else 0,
            "steps_per_epoch": steps_per_epoch,
            "classes": class_map.to_list(),
            "config": config.to_dict(),
            "metadata": meta,
        }
    )

    window: dict[str, torch.Tensor] = {}
    window_steps = 0
    window_t0 = time.perf_counter()
    stopped = config.max_steps is not None and step >= config.max_steps
    if (stopped or epoch >= config.epochs) and not quiet:
        tqdm.write(
            f"nothing to train: at epoch {epoch}, step {step} (epochs={config.epochs}, "
            f"max_steps={config.max_steps}); raise --epochs or --max-steps to go on"
        )
    try:
        while epoch < config.epochs and not stopped:
            source = iter_training_batches(
                view_train,
                config.batch_size,
                shuffle=True,
                seed=config.seed + epoch,
                drop_last=True,
            )
            for _ in range(batch_in_epoch):  # resume mid-epoch: skip what was already used
                next(source)
            epoch_sums: dict[str, torch.Tensor] = {}
            epoch_steps = 0
            epoch_t0 = time.perf_counter()
            bar = tqdm(
                total=steps_per_epoch,
                initial=batch_in_epoch,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                disable=quiet,
                leave=False,
            )
            for density, species in _batches(source, runtime, config.prefetch):
                with runtime.autocast():
                    out = step_fn(density, species)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                lr = learning_rate(config, step, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                optimizer.step()
                step += 1
                batch_in_epoch += 1
                epoch_steps += 1
                window_steps += 1
                for key, value in out.items():
                    v = value.detach().float()
                    window[key] = window.get(key, 0) + v
                    epoch_sums[key] = epoch_sums.get(key, 0) + v
                bar.update(1)
                if step % config.log_every == 0:
                    dt = time.perf_counter() - window_t0
                    record = {k: _finite(float(v) / window_steps) for k, v in window.items()}
                    log.write(
                        {
                            "kind": "step",
                            "step": step,
                            "epoch": epoch,
                            **record,
                            "lr": optimizer.param_groups[0]["lr"],
                            "samples_per_s": window_steps * config.batch_size / dt,
                            "time": time.time(),
                        }
                    )
                    bar.set_postfix(
                        loss=f"{record['loss']:.4g}" if record["loss"] is not None else "nan"
                    )
                    window, window_steps, window_t0 = {}, 0, time.perf_counter()
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    save(last)
                if config.max_steps is not None and step >= config.max_steps:
                    stopped = True
                    break
            bar.close()
            epoch_time = time.perf_counter() - epoch_t0
            train_means = (
                {f"train_{k}": _finite(float(v) / epoch_steps) for k, v in epoch_sums.items()}
                if epoch_steps
                else {}
            )
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
                "kind": "stop" if stopped and batch_in_epoch < steps_per_epoch else "epoch",
                "epoch": epoch,
                "step": step,
                **train_means,
                **{f"val_{k}": _finite(v) if isinstance(v, float) else v for k, v in val.items()},
                "epoch_time_s": epoch_time,
                "samples_per_s": epoch_steps * config.batch_size / epoch_time
                if epoch_time
                else None,
                "time": time.time(),
            }
            if record["kind"] == "epoch":
                epoch += 1
                batch_in_epoch = 0
            val_loss = val.get("loss", math.inf)
            improved = math.isfinite(val_loss) and val_loss < best_val
            if improved:
                best_val = val_loss
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


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of a run of ``total_steps``."""
    if config.lr_schedule == "constant" or total_steps <= 1:
        return config.lr
    progress = min(step, total_steps - 1) / (total_steps - 1)
    floor = config.lr / 100
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


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


def _version() -> str:
    from crystalgrid import __version__

    return __version__
