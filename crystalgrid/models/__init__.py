"""Reference models: the paper's beta-VAE, the attention U-Net, training, decoding and scores.

Install with ``pip install 'crystalgrid[models]'`` (torch, connected-components-3d,
matplotlib). Names are imported lazily: ``from crystalgrid.models import Scorer`` loads the
scorer's module only, and the modules that need no torch (the configuration, the class map,
decoding, the scores of atoms, the conditioning calibration, the plots) import without it.

The subpackages, each a job, from the bottom of their layers up (docs/architecture.md):

- :mod:`~crystalgrid.models.config`: :class:`TrainConfig`, the whole run's configuration;
  :mod:`~crystalgrid.models.runtime`: device, precision, compilation (:func:`resolve_runtime`).
- :mod:`~crystalgrid.models.nets`: the networks: :class:`VAE` (``nets.vae``),
  :class:`AttentionUNet3D` (``nets.unet``), :class:`ReferenceModel` (``nets.model``: both
  networks, the joint loss, ``reconstruct``/``generate``) and :class:`ClassMap`
  (``nets.classes``).
- :mod:`~crystalgrid.models.decoding`: back to atoms: :func:`decode_atoms`,
  :func:`decode_class_scores` (``decoding.segmentation``); :func:`fit_atoms`, the
  training-free peak fit (``decoding.peakfit``); :func:`atoms_to_structure`,
  :func:`atoms_to_molecule`, :func:`write_cif` (``decoding.structure``).
- :mod:`~crystalgrid.models.checkpoint`: the checkpoint format, :func:`load_checkpoint`
  (what every verb uses to load a model, never importing the trainer),
  :func:`save_checkpoint`, :class:`Checkpoint`, the shipped models by name (``weights/``);
  :mod:`~crystalgrid.models.inference`: a checkpoint's reconstructions of numpy grids.
- :mod:`~crystalgrid.models.scoring`: :class:`Scorer`, :func:`to_markdown`
  (``scoring.metrics``); ``evaluate(checkpoint, view)`` (``scoring.evaluate``);
  :func:`score_species_grids`, :func:`score_peak_fit` (``scoring.decoders``);
  :func:`score_predictions`, :func:`load_predictions`, :func:`write_truth_predictions`
  (``scoring.predictions``); :class:`MatchScorer`, :func:`match_checkpoint`,
  :func:`to_crystal_frame`, :func:`cdvae_matcher` (``scoring.matching``);
  :func:`spacing_distribution`, :func:`structural_validity`, :func:`conditional_check`
  (``scoring.generated``); :func:`nearest_neighbour_distances` (``scoring.distances``).
- :mod:`~crystalgrid.models.plots`: :func:`show_sample`, :func:`interpolation_strip`,
  :func:`spacing_plot`.
- :mod:`~crystalgrid.models.latent` (docs/latent.md): :func:`random_draws`
  (:class:`Samples`), :func:`decode_latents`, :func:`write_samples` (``latent.draws``);
  ``interpolate(checkpoint, a, b, steps=)`` (:class:`Interpolation`),
  :func:`resolve_sample`, :func:`write_interpolation` (``latent.interpolate``);
  :func:`condition_calibration`, :func:`condition_for_z` (``latent.conditioning``);
  :func:`train_realism` (:class:`RealismScorer`, :class:`LambdaNet`), :func:`score_report`,
  :func:`save_scorer`, :func:`load_scorer` (``latent.realism``).
- :mod:`~crystalgrid.models.latent.prior`: :class:`LatentPrior`, a prior learned over a
  trained model's latent grid so that random draws look like crystals; :func:`fit_prior`,
  :func:`save_prior`, :func:`load_prior`.
- :mod:`~crystalgrid.models.pretrained`: ``load(name_or_path)`` gives a :class:`CrystalModel`
  whose methods take and give pymatgen Structures: ``encode``, ``decode``, ``reconstruct``,
  ``sample``, ``interpolate``, ``score``.
- :mod:`~crystalgrid.models.training`: ``train(config, view_train, view_val,
  out_dir=...)`` (``training.loop``), :func:`measure_loader` (``training.loader``), the
  cube symmetries (``training.augment``). Nothing else in the models imports it.

:func:`run_baseline`, :data:`BUDGETS` and :class:`Budget` are re-exported from
:mod:`crystalgrid.baseline` (``crystalgrid baseline``), which builds stores, trains and
scores, above the models. Fresh grids on the GPU while training:
:mod:`crystalgrid.grids.sampler` (docs/gpu-grids.md).

``train``, ``evaluate`` and ``interpolate`` are not exported here (each is a function of its
module): ``from crystalgrid.models.training.loop import train``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "crystalgrid.models.config",
    "resolve_runtime": "crystalgrid.models.runtime",
    "ClassMap": "crystalgrid.models.nets.classes",
    "ReferenceModel": "crystalgrid.models.nets.model",
    "AttentionUNet3D": "crystalgrid.models.nets.unet",
    "VAE": "crystalgrid.models.nets.vae",
    "fit_atoms": "crystalgrid.models.decoding.peakfit",
    "decode_atoms": "crystalgrid.models.decoding.segmentation",
    "decode_class_scores": "crystalgrid.models.decoding.segmentation",
    "atoms_to_structure": "crystalgrid.models.decoding.structure",
    "atoms_to_molecule": "crystalgrid.models.decoding.structure",
    "write_cif": "crystalgrid.models.decoding.structure",
    "Checkpoint": "crystalgrid.models.checkpoint",
    "load_checkpoint": "crystalgrid.models.checkpoint",
    "save_checkpoint": "crystalgrid.models.checkpoint",
    "score_species_grids": "crystalgrid.models.scoring.decoders",
    "score_peak_fit": "crystalgrid.models.scoring.decoders",
    "nearest_neighbour_distances": "crystalgrid.models.scoring.distances",
    "spacing_distribution": "crystalgrid.models.scoring.generated",
    "structural_validity": "crystalgrid.models.scoring.generated",
    "conditional_check": "crystalgrid.models.scoring.generated",
    "MatchScorer": "crystalgrid.models.scoring.matching",
    "match_checkpoint": "crystalgrid.models.scoring.matching",
    "to_crystal_frame": "crystalgrid.models.scoring.matching",
    "cdvae_matcher": "crystalgrid.models.scoring.matching",
    "Scorer": "crystalgrid.models.scoring.metrics",
    "to_markdown": "crystalgrid.models.scoring.metrics",
    "load_predictions": "crystalgrid.models.scoring.predictions",
    "score_predictions": "crystalgrid.models.scoring.predictions",
    "write_truth_predictions": "crystalgrid.models.scoring.predictions",
    "show_sample": "crystalgrid.models.plots",
    "interpolation_strip": "crystalgrid.models.plots",
    "spacing_plot": "crystalgrid.models.plots",
    "condition_calibration": "crystalgrid.models.latent.conditioning",
    "condition_for_z": "crystalgrid.models.latent.conditioning",
    "Samples": "crystalgrid.models.latent.draws",
    "random_draws": "crystalgrid.models.latent.draws",
    "decode_latents": "crystalgrid.models.latent.draws",
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
    "LatentPrior": "crystalgrid.models.latent.prior",
    "fit_prior": "crystalgrid.models.latent.prior",
    "load_prior": "crystalgrid.models.latent.prior",
    "save_prior": "crystalgrid.models.latent.prior",
    "CrystalModel": "crystalgrid.models.pretrained",
    "load": "crystalgrid.models.pretrained",
    "measure_loader": "crystalgrid.models.training.loader",
    "BUDGETS": "crystalgrid.baseline",
    "Budget": "crystalgrid.baseline",
    "run_baseline": "crystalgrid.baseline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crystalgrid.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
