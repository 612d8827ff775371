"""Reference models: the paper's beta-VAE, the attention U-Net, training, decoding and scores.

Install with ``pip install 'crystalgrid[models]'`` (torch, connected-components-3d). Names
are imported lazily, so ``crystalgrid.models.decode`` and ``crystalgrid.models.metrics`` work
without torch.

Modules:

- :mod:`~crystalgrid.models.config`: :class:`TrainConfig`, the full run configuration.
- :mod:`~crystalgrid.models.nets.vae`: :class:`VAE`; :mod:`~crystalgrid.models.nets.unet`:
  :class:`AttentionUNet3D`; :mod:`~crystalgrid.models.nets.model`: :class:`ReferenceModel`
  (both networks, the joint loss, ``reconstruct``/``generate``);
  :mod:`~crystalgrid.models.nets.classes`: :class:`ClassMap`.
- :mod:`~crystalgrid.models.train`: ``train(config, view_train, view_val, out_dir=...)``, the
  training loop; :mod:`~crystalgrid.models.checkpoint`: the checkpoint format,
  :func:`load_checkpoint` (what every verb uses to load a model), :func:`save_checkpoint`;
  :mod:`~crystalgrid.models.runtime`: device, precision, compilation;
  :mod:`~crystalgrid.models.loader`: batches read ahead onto the device,
  :func:`measure_loader`.
- :mod:`~crystalgrid.models.decode`: :func:`decode_atoms`,
  :func:`decode_class_scores`, :func:`atoms_to_structure`, :func:`write_cif`.
- :mod:`~crystalgrid.models.metrics`: :class:`Scorer`, :func:`to_markdown`.
- :mod:`~crystalgrid.models.evaluate`: ``evaluate(checkpoint, view)``,
  :func:`score_species_grids`.
- :mod:`~crystalgrid.models.peakfit`: :func:`fit_atoms`, the training-free decoder of a
  density grid, and :func:`score_peak_fit`.
- :mod:`~crystalgrid.models.predictions`: :func:`score_predictions` (any model's output,
  same scorers), :func:`load_predictions`, :func:`write_truth_predictions`.
- :mod:`~crystalgrid.models.benchmark`: :func:`run_benchmark` by :data:`BUDGETS`
  (``crystalgrid benchmark``).

The latent space (docs/latent.md):

- :mod:`~crystalgrid.models.generate`: :func:`random_draws` (:class:`Samples`),
  :func:`spacing_distribution`, :func:`structural_validity`, :func:`conditional_check`,
  :func:`write_samples`; :mod:`~crystalgrid.models.conditioning`:
  :func:`condition_calibration`, :func:`condition_for_z`.
- :mod:`~crystalgrid.models.interpolate`: ``interpolate(checkpoint, a, b, steps=)``
  (:class:`Interpolation`), :func:`resolve_sample`, :func:`write_interpolation`.
- :mod:`~crystalgrid.models.realism`: :func:`train_realism` (:class:`RealismScorer`),
  :func:`score_report`, :func:`save_scorer`, :func:`load_scorer`.
- :mod:`~crystalgrid.models.matching`: :class:`MatchScorer`, :func:`match_checkpoint`,
  :func:`to_crystal_frame`.
- :mod:`~crystalgrid.models.plots`: :func:`show_sample`, :func:`interpolation_strip`,
  :func:`spacing_plot`.

Fresh grids on the GPU while training: :mod:`crystalgrid.grids.sampler` (docs/gpu-grids.md).

``train``, ``evaluate`` and ``interpolate`` are functions of the modules of the same name:
``from crystalgrid.models.train import train``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config",
    "VAE": "nets.vae",
    "AttentionUNet3D": "nets.unet",
    "ReferenceModel": "nets.model",
    "Checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "measure_loader": "loader",
    "resolve_runtime": "runtime",
    "ClassMap": "nets.classes",
    "decode_atoms": "decode",
    "decode_class_scores": "decode",
    "atoms_to_structure": "decode",
    "atoms_to_molecule": "decode",
    "write_cif": "decode",
    "Scorer": "metrics",
    "to_markdown": "metrics",
    "score_species_grids": "evaluate",
    "fit_atoms": "peakfit",
    "score_peak_fit": "peakfit",
    "load_predictions": "predictions",
    "score_predictions": "predictions",
    "write_truth_predictions": "predictions",
    "BUDGETS": "benchmark",
    "Budget": "benchmark",
    "run_benchmark": "benchmark",
    "Samples": "generate",
    "random_draws": "generate",
    "decode_latents": "generate",
    "nearest_neighbour_distances": "generate",
    "spacing_distribution": "generate",
    "structural_validity": "generate",
    "condition_calibration": "conditioning",
    "condition_for_z": "conditioning",
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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crystalgrid.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"crystalgrid.models.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
