"""What the model verbs share: the --precision option, torch's check, opening a store and a
split, loading a checkpoint (results are written by :func:`crystalgrid.jsonio.write_results`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from crystalgrid.errors import CrystalgridError, NotFoundError

__all__ = [
    "PRECISION_HELP",
    "UNET_DECODERS",
    "load_model",
    "open_store",
    "pct",
    "precision_option",
    "require_torch",
    "split_of",
]

#: The decoders that read the U-Net (``crystalgrid.models.scoring.evaluate.UNET_DECODERS``,
#: named here so that the command line imports no torch; a test keeps the two equal).
UNET_DECODERS = ("unet-peaks", "unet-components", "unet-amplitudes", "unet-cell")

_INSTALL_HINT = "the reference models need torch: pip install 'crystalgrid[models]'"

#: What ``--precision`` means for every verb that runs a network.
PRECISION_HELP = (
    "auto: bf16 autocast where the processor runs bf16 natively (a GPU, a CPU with "
    "AVX512-BF16 or AMX), fp32 elsewhere."
)


def precision_option(default: str | None = "auto", text: str = PRECISION_HELP) -> Any:
    """The ``--precision`` option (auto, fp32, bf16) of a verb that runs a network."""
    return click.option(
        "--precision",
        type=click.Choice(["auto", "fp32", "bf16"]),
        default=default,
        show_default=default is not None,
        help=text,
    )


def require_torch() -> None:
    """Raise one line naming the extra when torch is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CrystalgridError(_INSTALL_HINT) from None


def open_store(location: str) -> Any:
    """The store at a local path or a URL (``s3://...``), opened."""
    from crystalgrid.dataset import open_dataset
    from crystalgrid.remote import is_url

    if not is_url(location) and not Path(location).exists():
        raise NotFoundError(f"dataset store not found: {location}")
    return open_dataset(location)


def split_of(dataset: Any, name: str) -> Any:
    """A split of an opened store, or one line naming the missing split."""
    try:
        return dataset.split(name)
    except (KeyError, ValueError) as exc:
        raise NotFoundError(f"the store has no split {name!r}: {exc}") from None


def load_model(checkpoint: Path) -> Any:
    """A checkpoint file or shipped model name, loaded."""
    require_torch()
    from crystalgrid.models.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)


def pct(x: float | None) -> str:
    """``0.123`` as ``"12.3%"``; ``None`` as ``"n/a"``."""
    return "n/a" if x is None else f"{100 * x:.1f}%"
