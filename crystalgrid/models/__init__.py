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

The latent space (docs/latent.md):

- :mod:`~crystalgrid.models.generate`: :func:`random_draws` (:class:`Samples`),
  :func:`spacing_distribution`, :func:`structural_validity`, :func:`condition_calibration`,
  :func:`condition_for_z`, :func:`conditional_check`, :func:`write_samples`.
- :mod:`~crystalgrid.models.interpolate`: ``interpolate(checkpoint, a, b, steps=)``
  (:class:`Interpolation`), :func:`resolve_sample`, :func:`write_interpolation`.
- :mod:`~crystalgrid.models.realism`: :func:`train_realism` (:class:`RealismScorer`),
  :func:`score_report`, :func:`save_scorer`, :func:`load_scorer`.
- :mod:`~crystalgrid.models.matching`: :class:`MatchScorer`, :func:`match_checkpoint`,
  :func:`to_crystal_frame`.
- :mod:`~crystalgrid.models.plots`: :func:`show_sample`, :func:`interpolation_strip`,
  :func:`spacing_plot`.

Grids on the GPU (docs/gpu-grids.md):

- :mod:`~crystalgrid.models.gpu_grids`: batched torch placement (:func:`place_batch`), density
  and species grids (:func:`density_grids`, :func:`species_grids`) that agree with the CPU
  builder, and :class:`GridSampler`, which draws fresh rotations and crops of the stored
  crystals every step.

``train``, ``evaluate`` and ``interpolate`` are functions of the modules of the same name:
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
    "Samples": "generate",
    "random_draws": "generate",
    "decode_latents": "generate",
    "nearest_neighbour_distances": "generate",
    "spacing_distribution": "generate",
    "structural_validity": "generate",
    "condition_calibration": "generate",
    "condition_for_z": "generate",
    "conditional_check": "generate",
    "write_samples": "generate",
    "Interpolation": "interpolate",
    "resolve_sample": "interpolate",
    "write_interpolation": "interpolate",
    "LambdaNet": "realism",
    "RealismScorer": "realism",
    "train_realism": "realism",
    "score_report": "realism",
    "save_scorer": "realism",
    "load_scorer": "realism",
    "MatchScorer": "matching",
    "match_checkpoint": "matching",
    "to_crystal_frame": "matching",
    "cdvae_matcher": "matching",
    "show_sample": "plots",
    "interpolation_strip": "plots",
    "spacing_plot": "plots",
    "GridSampler": "gpu_grids",
    "GridBatch": "gpu_grids",
    "BatchPlacement": "gpu_grids",
    "density_grids": "gpu_grids",
    "species_grids": "gpu_grids",
    "place_batch": "gpu_grids",
    "random_transforms": "gpu_grids",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crystalgrid.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"crystalgrid.models.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
