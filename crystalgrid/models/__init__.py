"""Reference models: the paper's beta-VAE, the attention U-Net, training, decoding and scores.

Install with ``pip install 'crystalgrid[models]'`` (torch, connected-components-3d). Names
are imported lazily, so ``crystalgrid.models.decode`` and ``crystalgrid.models.metrics`` work
without torch.

Modules:

- :mod:`~crystalgrid.models.config`: :class:`TrainConfig`, the full run configuration.
- :mod:`~crystalgrid.models.vae`: :class:`VAE`; :mod:`~crystalgrid.models.unet`:
  :class:`AttentionUNet3D`; :mod:`~crystalgrid.models.losses`: :class:`ReferenceModel`
  (both networks, the joint loss, ``reconstruct``/``generate``).
- :mod:`~crystalgrid.models.train`: ``train(config, view_train, view_val, out_dir=...)``,
  :func:`load_checkpoint`, :func:`save_checkpoint`, :func:`measure_loader`.
- :mod:`~crystalgrid.models.decode`: :func:`decode_atoms`, :class:`ClassMap`,
  :func:`atoms_to_structure`, :func:`write_cif`.
- :mod:`~crystalgrid.models.metrics`: :class:`Scorer`, :func:`to_markdown`.
- :mod:`~crystalgrid.models.evaluate`: ``evaluate(checkpoint, view)``,
  :func:`score_species_grids`.

``train`` and ``evaluate`` are functions of the modules of the same name:
``from crystalgrid.models.train import train``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config",
    "VAE": "vae",
    "AttentionUNet3D": "unet",
    "ReferenceModel": "losses",
    "Checkpoint": "train",
    "load_checkpoint": "train",
    "save_checkpoint": "train",
    "measure_loader": "train",
    "ClassMap": "decode",
    "decode_atoms": "decode",
    "atoms_to_structure": "decode",
    "atoms_to_molecule": "decode",
    "write_cif": "decode",
    "Scorer": "metrics",
    "to_markdown": "metrics",
    "score_species_grids": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crystalgrid.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"crystalgrid.models.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
