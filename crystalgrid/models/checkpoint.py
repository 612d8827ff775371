"""The checkpoint format of the reference model, and the one function that loads it.

A checkpoint (``torch.save`` of a dict, read with ``weights_only=True``: no code is
unpickled) holds the networks, the optimiser, the config, the class map, the grid spec, the
position (epoch, step, batch within the epoch), the torch RNG states, user metadata and the
versions that wrote it. Files are written atomically and durably
(:func:`crystalgrid.fileio.open_atomic`: temporary file, fsync, rename).

Shipped models. The reference baselines ship inside the package (``crystalgrid/models/
weights/``) as weights-only bf16 files written by :func:`export_checkpoint`; wherever a
checkpoint path is taken, one of the names in :data:`SHIPPED` may be given instead
(``crystalgrid evaluate baseline-1h-cpu-single --data STORE``). Loading one needs neither the
trainer nor the optimiser state.
"""

from __future__ import annotations

import hashlib
import math
import pickle
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from crystalgrid._version import __version__
from crystalgrid.errors import BadInputError, NotFoundError
from crystalgrid.fileio import open_atomic
from crystalgrid.models.config import TrainConfig
from crystalgrid.models.decoding.cell_species import CellSpecies
from crystalgrid.models.nets.classes import ClassMap
from crystalgrid.models.nets.model import ReferenceModel
from crystalgrid.spec import GridSpec

__all__ = [
    "CHECKPOINT_FORMAT",
    "DECODER_METADATA",
    "Checkpoint",
    "as_checkpoint",
    "atomic_save",
    "checkpoint_config",
    "export_checkpoint",
    "file_sha256",
    "load_checkpoint",
    "read_checkpoint",
    "resolve_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "update_metadata",
    "writable_checkpoint",
]

CHECKPOINT_FORMAT = "crystalgrid.models/vae-unet/1"

#: Models shipped with the package: name -> file in ``crystalgrid/models/weights/`` (each
#: with its card in the repository's ``models/`` folder).
SHIPPED: dict[str, str] = {
    "baseline-1h-cpu-single": "baseline-1h-cpu-single.pt",
    "baseline-2h-cpu-repeated": "baseline-2h-cpu-repeated.pt",
}
_WEIGHTS = Path(__file__).resolve().parent / "weights"

#: The metadata entry that holds a checkpoint's decoder settings tuned on a split
#: (:func:`crystalgrid.models.scoring.threshold.tune_threshold`): ``{"threshold": ..., ...}``.
DECODER_METADATA = "decoder"


def resolve_checkpoint(ref: str | Path) -> Path:
    """The file of a checkpoint given by path or by a shipped name (:data:`SHIPPED`).

    Raises:
        NotFoundError: for a name that is neither a file nor a shipped model, or a shipped
            model whose file is missing.
    """
    path = Path(ref)
    if path.is_file():
        return path
    name = str(ref)
    if name in SHIPPED:
        shipped = _WEIGHTS / SHIPPED[name]
        if not shipped.is_file():
            raise NotFoundError(f"the shipped model {name!r} is missing from {_WEIGHTS}")
        return shipped
    if path.suffix or len(path.parts) > 1:
        raise NotFoundError(f"checkpoint not found: {path}")
    raise NotFoundError(
        f"no checkpoint file or shipped model named {name!r}; shipped: {', '.join(SHIPPED)}"
    )


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` of ``obj`` to ``path``, atomically and durably
    (:func:`~crystalgrid.fileio.open_atomic`: streamed to a temporary file, then renamed)."""
    with open_atomic(path, durable=True) as fh:
        torch.save(obj, fh)


def update_metadata(path: str | Path, **entries: Any) -> Path:
    """Add or replace ``entries`` (JSON-ready) in the metadata of the checkpoint file
    ``path``, rewritten atomically; everything else is kept as it was.

    Raises:
        BadInputError: for a shipped model (:func:`writable_checkpoint`) or a file that is
            not a checkpoint.
        NotFoundError: for a missing file.
    """
    target = writable_checkpoint(path)
    ckpt = read_checkpoint(target)
    ckpt["metadata"] = {**ckpt.get("metadata", {}), **entries}
    atomic_save(ckpt, target)
    return target


def writable_checkpoint(ref: str | Path) -> Path:
    """The file of a checkpoint that may be rewritten: a path, not a shipped name.

    Raises:
        BadInputError: for a shipped model (part of the installed package: copy its file
            and change the copy).
        NotFoundError: for a missing file.
    """
    if not Path(ref).is_file() and str(ref) in SHIPPED:
        raise BadInputError(
            f"{ref} is a shipped model, part of the installed package; copy its file "
            f"({_WEIGHTS / SHIPPED[str(ref)]}) and change the copy"
        )
    return resolve_checkpoint(ref)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw dict of a checkpoint file (or shipped name), checked for its format (CPU
    tensors).

    Raises:
        NotFoundError: if the file is missing.
        BadInputError: if it is not such a checkpoint.
    """
    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path} is not a readable checkpoint: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise BadInputError(f"{path} is not a crystalgrid reference-model checkpoint")
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
    """Write a checkpoint atomically (:func:`atomic_save`).

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
    atomic_save(
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
            "versions": {"torch": str(torch.__version__), "crystalgrid": __version__},
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
        sha256: the SHA-256 of the file read (hex): which weights a score belongs to.
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
    sha256: str | None = None

    def identity(self) -> dict[str, Any]:
        """JSON-ready: the file (path, SHA-256) and its step and epoch, for a results file."""
        return {
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256,
            "step": self.step,
            "epoch": self.epoch,
        }

    @property
    def peak_threshold(self) -> float:
        """The atom log-odds above which a U-Net peak is an atom: the threshold tuned on a
        validation split and recorded with the checkpoint (:data:`DECODER_METADATA`), else 0
        (``P(atom) >= 0.5``)."""
        return float(self.metadata.get(DECODER_METADATA, {}).get("threshold", 0.0))

    @property
    def amplitude_offset(self) -> float:
        """Electrons added to the amplitudes fitted to the reconstruction before they are
        rounded to atomic numbers (the ``unet-amplitudes`` decoder): tuned on a validation
        split with the threshold and recorded with the checkpoint, else 0."""
        entry = self.metadata.get(DECODER_METADATA, {}).get("amplitudes") or {}
        return float(entry.get("offset", 0.0))

    @cached_property
    def cell_species(self) -> CellSpecies:
        """The per-cell species reader of the ``unet-cell`` decoder: its settings tuned on a
        validation split with the threshold and recorded with the checkpoint, else amplitudes
        offset by :attr:`amplitude_offset`, spread 2 electrons, half-weighted segmenter
        scores and a uniform prior."""
        entry = self.metadata.get(DECODER_METADATA, {}).get("cell_species")
        if entry:
            return CellSpecies.from_dict(entry)
        return CellSpecies(offset=self.amplitude_offset, sigma=2.0, segmenter_weight=0.5)


def checkpoint_config(path: str | Path) -> TrainConfig:
    """The training configuration stored in a checkpoint.

    Raises:
        NotFoundError: if the file is missing.
        BadInputError: if it is not such a checkpoint.
    """
    return TrainConfig.from_dict(read_checkpoint(path)["config"])


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint (the trainer's ``last.pt`` or ``best.pt``), weights only.

    Every verb that needs a trained model loads it with this function.

    Raises:
        NotFoundError: if the file is missing.
        BadInputError: if it is not such a checkpoint.
    """
    path = resolve_checkpoint(path)
    ckpt = read_checkpoint(path)
    config = TrainConfig.from_dict(ckpt["config"])
    class_map = ClassMap(ckpt["classes"])
    spec = GridSpec.from_dict(ckpt["spec"])
    model = ReferenceModel(config, spec.bins, class_map)
    model.load_state_dict(ckpt["model"])  # bf16 weights of a shipped model become float32
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
        sha256=file_sha256(path),
    )


def file_sha256(path: str | Path) -> str:
    """The SHA-256 (hex) of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def as_checkpoint(checkpoint: str | Path | Checkpoint) -> Checkpoint:
    """A loaded checkpoint as it is; a path or a shipped name loaded by
    :func:`load_checkpoint` (on the CPU).

    Raises:
        NotFoundError: if the file is missing.
        BadInputError: if it is not such a checkpoint.
    """
    return checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], *, cuda: bool = False) -> str | None:
    """Set torch's RNG states to those a checkpoint saved.

    Args:
        state: the checkpoint's ``"rng"`` entry.
        cuda: whether the resumed run draws on a GPU (then its CUDA states matter).

    Returns:
        ``None`` when every state the run needs was restored, else why not (one line): a
        run resumed on a GPU from a checkpoint saved without one, or on fewer GPUs.
    """
    torch.set_rng_state(state["torch"])
    if not cuda:
        return None
    if "cuda" not in state:
        return "the checkpoint was saved without a GPU, so it holds no CUDA random state"
    try:
        torch.cuda.set_rng_state_all(state["cuda"])
    except (RuntimeError, IndexError) as exc:
        return f"its CUDA random states do not fit this machine's GPUs ({exc})"
    return None


def export_checkpoint(
    src: str | Path, dst: str | Path, *, dtype: torch.dtype = torch.bfloat16
) -> Path:
    """A weights-only copy of a checkpoint for sharing: floating tensors in ``dtype``, no
    optimiser or RNG state (it loads with :func:`load_checkpoint`, it does not resume).

    Returns:
        ``dst``.
    """
    ckpt = read_checkpoint(src)
    ckpt["model"] = {
        k: v.to(dtype) if v.is_floating_point() else v for k, v in ckpt["model"].items()
    }
    ckpt["optimizer"] = {}
    ckpt["rng"] = {}
    ckpt["metadata"] = {**ckpt.get("metadata", {}), "exported_dtype": str(dtype)}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(ckpt, dst)
    return dst
