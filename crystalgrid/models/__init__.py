"""Reference models: the paper's beta-VAE, the attention U-Net, training, decoding and scores.

Install with ``pip install 'crystalgrid[models]'`` (torch, connected-components-3d). Names
are imported lazily, so ``crystalgrid.models.decoding`` and
``crystalgrid.models.scoring.metrics`` work without torch.

Modules:

- :mod:`~crystalgrid.models.config`: :class:`TrainConfig`, the full run configuration.
- :mod:`~crystalgrid.models.nets.vae`: :class:`VAE`; :mod:`~crystalgrid.models.nets.unet`:
  :class:`AttentionUNet3D`; :mod:`~crystalgrid.models.nets.model`: :class:`ReferenceModel`
  (both networks, the joint loss, ``reconstruct``/``generate``);
  :mod:`~crystalgrid.models.nets.classes`: :class:`ClassMap`.
- :mod:`~crystalgrid.models.training.loop`: ``train(config, view_train, view_val,
  out_dir=...)``, the training loop; :mod:`~crystalgrid.models.checkpoint`: the checkpoint format,
  :func:`load_checkpoint` (what every verb uses to load a model), :func:`save_checkpoint`;
  :mod:`~crystalgrid.models.runtime`: device, precision, compilation;
  :mod:`~crystalgrid.models.training.loader`: batches read ahead onto the device,
  :func:`measure_loader`.
- :mod:`~crystalgrid.models.decoding.segmentation`: :func:`decode_atoms`,
  :func:`decode_class_scores`; :mod:`~crystalgrid.models.decoding.structure`:
  :func:`atoms_to_structure`, :func:`write_cif`.
- :mod:`~crystalgrid.models.scoring.metrics`: :class:`Scorer`, :func:`to_markdown`.
- :mod:`~crystalgrid.models.scoring.evaluate`: ``evaluate(checkpoint, view)``;
  :mod:`~crystalgrid.models.scoring.decoders`: :func:`score_species_grids`,
  :func:`score_peak_fit`.
- :mod:`~crystalgrid.models.decoding.peakfit`: :func:`fit_atoms`, the training-free decoder of a
  density grid.
- :mod:`~crystalgrid.models.scoring.predictions`: :func:`score_predictions` (any model's output,
  same scorers), :func:`load_predictions`, :func:`write_truth_predictions`.
- :func:`run_benchmark`, :data:`BUDGETS` and :class:`Budget` are re-exported from
  :mod:`crystalgrid.benchmark` (``crystalgrid benchmark``), which builds stores and trains.

The latent space (docs/latent.md):

- :mod:`~crystalgrid.models.latent.draws`: :func:`random_draws` (:class:`Samples`),
  :func:`write_samples`; :mod:`~crystalgrid.models.scoring.generated`:
  :func:`spacing_distribution`, :func:`structural_validity`, :func:`conditional_check`;
  :mod:`~crystalgrid.models.latent.conditioning`:
  :func:`condition_calibration`, :func:`condition_for_z`.
- :mod:`~crystalgrid.models.latent.interpolate`: ``interpolate(checkpoint, a, b, steps=)``
  (:class:`Interpolation`), :func:`resolve_sample`, :func:`write_interpolation`.
- :mod:`~crystalgrid.models.latent.realism`: :func:`train_realism` (:class:`RealismScorer`),
  :func:`score_report`, :func:`save_scorer`, :func:`load_scorer`.
- :mod:`~crystalgrid.models.scoring.matching`: :class:`MatchScorer`, :func:`match_checkpoint`,
  :func:`to_crystal_frame`.
- :mod:`~crystalgrid.models.plots`: :func:`show_sample`, :func:`interpolation_strip`,
  :func:`spacing_plot`.

Fresh grids on the GPU while training: :mod:`crystalgrid.grids.sampler` (docs/gpu-grids.md).

``train``, ``evaluate`` and ``interpolate`` are not exported here (each is a function of its
module): ``from crystalgrid.models.training.loop import train``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "crystalgrid.models.config",
    "VAE": "crystalgrid.models.nets.vae",
    "AttentionUNet3D": "crystalgrid.models.nets.unet",
    "ReferenceModel": "crystalgrid.models.nets.model",
    "Checkpoint": "crystalgrid.models.checkpoint",
    "load_checkpoint": "crystalgrid.models.checkpoint",
    "save_checkpoint": "crystalgrid.models.checkpoint",
    "measure_loader": "crystalgrid.models.training.loader",
    "resolve_runtime": "crystalgrid.models.runtime",
    "ClassMap": "crystalgrid.models.nets.classes",
    "decode_atoms": "crystalgrid.models.decoding.segmentation",
    "decode_class_scores": "crystalgrid.models.decoding.segmentation",
    "atoms_to_structure": "crystalgrid.models.decoding.structure",
    "atoms_to_molecule": "crystalgrid.models.decoding.structure",
    "write_cif": "crystalgrid.models.decoding.structure",
    "Scorer": "crystalgrid.models.scoring.metrics",
    "to_markdown": "crystalgrid.models.scoring.metrics",
    "score_species_grids": "crystalgrid.models.scoring.decoders",
    "fit_atoms": "crystalgrid.models.decoding.peakfit",
    "score_peak_fit": "crystalgrid.models.scoring.decoders",
    "load_predictions": "crystalgrid.models.scoring.predictions",
    "score_predictions": "crystalgrid.models.scoring.predictions",
    "write_truth_predictions": "crystalgrid.models.scoring.predictions",
    "BUDGETS": "crystalgrid.benchmark",
    "Budget": "crystalgrid.benchmark",
    "run_benchmark": "crystalgrid.benchmark",
    "Samples": "crystalgrid.models.latent.draws",
    "random_draws": "crystalgrid.models.latent.draws",
    "decode_latents": "crystalgrid.models.latent.draws",
    "nearest_neighbour_distances": "crystalgrid.models.scoring.distances",
    "spacing_distribution": "crystalgrid.models.scoring.generated",
    "structural_validity": "crystalgrid.models.scoring.generated",
    "condition_calibration": "crystalgrid.models.latent.conditioning",
    "condition_for_z": "crystalgrid.models.latent.conditioning",
    "conditional_check": "crystalgrid.models.scoring.generated",
    "write_samples": "crystalgrid.models.latent.draws",
    "Interpolation": "crystalgrid.models.latent.interpolate",
    "resolve_sample": "crystalgrid.models.latent.interpolate",
    "write_interpolation": "crystalgrid.models.latent.interpolate",
    "LambdaNet": "crystalgrid.models.latent.realism",
    "RealismScorer": "crystalgrid.models.latent.realism",
    "train_realism": "crystalgrid.models.latent.realism",
    "score_report": "crystalgrid.models.latent.realism",
    "save_scorer": "crystalgrid.models.latent.realism",
    "load_scorer": "crystalgrid.models.latent.realism",
    "MatchScorer": "crystalgrid.models.scoring.matching",
    "match_checkpoint": "crystalgrid.models.scoring.matching",
    "to_crystal_frame": "crystalgrid.models.scoring.matching",
    "cdvae_matcher": "crystalgrid.models.scoring.matching",
    "show_sample": "crystalgrid.models.plots",
    "interpolation_strip": "crystalgrid.models.plots",
    "spacing_plot": "crystalgrid.models.plots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crystalgrid.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
