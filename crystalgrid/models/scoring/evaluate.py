"""Score a trained checkpoint on a split: reconstruct, segment, decode atoms, compare.

Each sample's density is encoded, the posterior *mean* is decoded (deterministic scores),
the U-Net scores every voxel of the reconstruction, a decoder turns the scores into atoms
(by default :func:`~crystalgrid.models.decoding.segmentation.decode_class_scores`; the
paper's connected components with ``decoder="unet-components"``), and
:class:`~crystalgrid.models.scoring.metrics.Scorer` compares them with the sample's
ground-truth atoms (``atom_positions``, ``atom_numbers``) and the
reconstruction with the true density (voxel MSE, Å^-6).

:func:`~crystalgrid.models.scoring.decoders.score_species_grids` scores the decoding step alone
on the true species grids: the ceiling the model can reach with a perfect segmentation. The
species grid labels only the atoms inside the box, so the ceiling is close to, not exactly,
100% (the measured figures are in docs/models.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crystalgrid.contracts import ViewLike, iter_view
from crystalgrid.errors import BadInputError, CrystalgridError
from crystalgrid.models.checkpoint import Checkpoint, as_checkpoint
from crystalgrid.models.decoding.peakfit import fit_amplitudes, fit_atoms, fitted_electrons
from crystalgrid.models.decoding.segmentation import (
    decode_atoms,
    decode_class_scores,
    species_probabilities,
)
from crystalgrid.models.runtime import Runtime, resolve_runtime
from crystalgrid.models.scoring.metrics import Scorer
from crystalgrid.spec import GridSpec

__all__ = [
    "DECODERS",
    "INTERIOR_MARGIN",
    "SOURCES",
    "UNET_DECODERS",
    "check_spec",
    "decode_sample",
    "evaluate",
    "model_outputs",
]

#: How a reconstruction becomes atoms: peaks of the U-Net's atom log-odds (the default), the
#: paper's connected components of the U-Net's argmax, the U-Net's peaks with species from the
#: reconstruction's fitted amplitudes, the U-Net's peaks with species read per cell from the
#: amplitudes and the U-Net's scores together, or the training-free peak fit.
DECODERS = ("unet-peaks", "unet-components", "unet-amplitudes", "unet-cell", "peakfit")

#: The decoders that read the U-Net's scores (all but the training-free peak fit): what a
#: reconstruction, a random draw or a match can be read with.
UNET_DECODERS = tuple(name for name in DECODERS if name.startswith("unet"))

#: What the decoders read: the VAE's reconstruction, or the true density (no VAE).
SOURCES = ("reconstruction", "truth")


#: Å: atoms at least this far from every face are scored apart as well (a crop's density
#: carries the periodic images beyond each face, its labels only the atoms inside).
INTERIOR_MARGIN = 0.6


def evaluate(
    checkpoint: str | Path | Checkpoint,
    view: ViewLike,
    *,
    spec: GridSpec | None = None,
    batch_size: int = 64,
    device: str = "auto",
    precision: str | None = None,
    limit: int | None = None,
    match_radius: float = 0.5,
    ceiling: bool = True,
    decoder: str = "unet-peaks",
    also: tuple[str, ...] = (),
    records: list[dict[str, Any]] | None = None,
    source: str = "reconstruction",
    threshold: float | None = None,
    interior_margin: float | None = INTERIOR_MARGIN,
    quiet: bool = False,
) -> dict[str, Any]:
    """The paper's scores of a checkpoint on a split.

    Args:
        checkpoint: a path, or a :class:`~crystalgrid.models.checkpoint.Checkpoint`.
        view: the split (``iter_batches`` yielding ``density``, ``atom_positions``,
            ``atom_numbers``).
        spec: the split's grid geometry (default ``view.spec`` when present); it must match
            the checkpoint's.
        batch_size: samples per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``; ``None``: ``"auto"`` (bf16 where the
            processor runs it natively, fp32 elsewhere), whatever the model was trained in.
        limit: score only the first ``limit`` samples.
        match_radius: Å, for the matched-atom scores.
        interior_margin: Å; also score the atoms at least this far from every face of the box
            (``"interior"``: where a crop's labels and its density agree); ``None``: not.
        ceiling: also score the true species grids of the same samples (``"ceiling"``).
        decoder: how the reconstruction becomes atoms: ``"unet-peaks"`` (peaks of the
            U-Net's atom log-odds,
            :func:`~crystalgrid.models.decoding.segmentation.decode_class_scores`),
            ``"unet-components"`` (the paper's: connected components of the U-Net's argmax,
            :func:`~crystalgrid.models.decoding.segmentation.decode_atoms`),
            ``"unet-amplitudes"`` (the U-Net's peaks, each atom's Z from the amplitudes
            fitted to the reconstruction plus the checkpoint's tuned offset,
            :func:`~crystalgrid.models.decoding.peakfit.fit_amplitudes`), ``"unet-cell"``
            (the U-Net's peaks, the species of all of a sample's atoms read together from
            their amplitudes, the U-Net's scores and a prior over elements, by the
            checkpoint's tuned :attr:`~crystalgrid.models.checkpoint.Checkpoint.cell_species`)
            or ``"peakfit"``
            (the training-free fit of :mod:`crystalgrid.models.decoding.peakfit`, in place of
            the U-Net).
        also: more decoders scored on the same reconstructions (one forward pass for all),
            returned under ``"also"`` by name.
        records: a list to append each sample's own summary to (``index``, ``n_true``,
            ``n_pred``, ``n_matched``, ...; see :meth:`Scorer.add`).
        source: what the decoders read: ``"reconstruction"`` (the VAE's, the model's score)
            or ``"truth"`` (the true densities, no VAE: the segmenter or the peak fit on its
            own, which tells the VAE's share of the error from the U-Net's; no voxel MSE).
        threshold: the atom log-odds above which a U-Net peak is an atom; ``None``: the
            checkpoint's own (:attr:`~crystalgrid.models.checkpoint.Checkpoint.peak_threshold`,
            tuned on a validation split by
            :func:`~crystalgrid.models.scoring.threshold.tune_threshold`, else 0).
        quiet: no progress bar.

    Returns:
        :meth:`Scorer.result` plus ``"checkpoint"`` (path, SHA-256, step, epoch), ``"runtime"``,
        ``"peak_threshold"`` and, with ``ceiling``, ``"ceiling"``: the scores of decoding
        the true species grids.

    Raises:
        CrystalgridError: for a missing checkpoint or a grid spec that differs.
    """
    from tqdm.auto import tqdm

    for name in (decoder, *also):
        if name not in DECODERS:
            raise CrystalgridError(f"decoder must be one of {', '.join(DECODERS)}, got {name!r}")
    if source not in SOURCES:
        raise CrystalgridError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    ckpt = as_checkpoint(checkpoint)
    check_spec(ckpt, view, spec)
    runtime = resolve_runtime(device, precision or "auto", compile=False)
    threshold = ckpt.peak_threshold if threshold is None else float(threshold)
    interior = None if interior_margin is None else (ckpt.spec.side, float(interior_margin))
    scorer = Scorer(match_radius=match_radius, interior=interior)
    others = {name: Scorer(match_radius=match_radius, interior=interior) for name in also}
    oracle = Scorer(match_radius=match_radius, interior=interior) if ceiling else None
    needs_scores = any(name.startswith("unet") for name in (decoder, *also))
    total = len(view) if limit is None else min(limit, len(view))
    bar = tqdm(total=total, desc="evaluate", disable=quiet, leave=False)
    outputs = model_outputs(
        ckpt, view, runtime, batch_size=batch_size, limit=limit, source=source, scores=needs_scores
    )
    for batch, recon_np, logits_np in outputs:
        true_density = np.asarray(batch["density"], dtype=np.float32)
        mse: Any = (
            [None] * len(recon_np)  # the decoders read the truth itself
            if source == "truth"
            else ((recon_np - true_density) ** 2).reshape(len(recon_np), -1).mean(axis=1)
        )
        truth = (batch["atom_positions"], batch["atom_numbers"])
        for i in range(len(recon_np)):
            scores_i = logits_np[i] if logits_np is not None else None
            peaks: dict[str, Any] = {}  # the U-Net's peaks, found once for every decoder
            pos, z = decode_sample(decoder, scores_i, recon_np[i], ckpt, peaks, threshold)
            summary = scorer.add(
                pos, z, true_positions=truth[0][i], true_numbers=truth[1][i], voxel_mse=mse[i]
            )
            for name, other in others.items():
                pos, z = decode_sample(name, scores_i, recon_np[i], ckpt, peaks, threshold)
                other.add(
                    pos, z, true_positions=truth[0][i], true_numbers=truth[1][i], voxel_mse=mse[i]
                )
            if records is not None:
                index = int(batch["index"][i]) if "index" in batch else None
                records.append({"index": index, **summary})
            if oracle is not None:
                pos, z = decode_atoms(np.asarray(batch["species"][i]), ckpt.spec)
                oracle.add(pos, z, true_positions=truth[0][i], true_numbers=truth[1][i])
        bar.update(len(recon_np))
    bar.close()
    result = scorer.result()
    result["checkpoint"] = {**ckpt.identity(), "metadata": ckpt.metadata}
    result["runtime"] = runtime.describe()
    result["decoder"] = decoder
    result["peak_threshold"] = threshold
    result["source"] = source
    if oracle is not None:
        result["ceiling"] = oracle.result()
    if others:
        result["also"] = {name: {**o.result(), "decoder": name} for name, o in others.items()}
    return result


def check_spec(ckpt: Checkpoint, view: ViewLike | None, spec: GridSpec | None = None) -> None:
    """Refuse a split or store whose grid spec (``spec``, else ``view.spec`` when present) is
    not the checkpoint's: the one check of every command that runs a model on a store.

    Raises:
        BadInputError: the specs differ.
    """
    spec = spec or getattr(view, "spec", None) or ckpt.spec
    if spec != ckpt.spec:
        raise BadInputError(
            f"the split's grid spec {spec.to_dict()} differs from the checkpoint's "
            f"{ckpt.spec.to_dict()}"
        )


def model_outputs(
    ckpt: Checkpoint,
    view: ViewLike,
    runtime: Runtime,
    *,
    batch_size: int,
    limit: int | None = None,
    source: str = "reconstruction",
    scores: bool = True,
) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray | None]]:
    """The model's outputs on a split, batch by batch, as numpy on the CPU.

    Args:
        ckpt: the loaded checkpoint; its model is moved to ``runtime.device``.
        view: the split; ``limit``: its first samples only.
        runtime: device and precision of the forward passes.
        source: ``"reconstruction"`` (the VAE's posterior-mean reconstruction, then the
            U-Net on it) or ``"truth"`` (the U-Net on the true density, no VAE).
        scores: also return the U-Net's logits (else ``None``).

    Yields:
        ``(batch, density (B, n, n, n) float32 Å^-3, logits (B, classes, n, n, n) float32 or
        None)``: the view's batch, what the decoders read (the reconstruction, or the true
        density itself) and the U-Net's scores of it.
    """
    model = runtime.place(ckpt.model).eval()
    for batch in iter_view(view, batch_size, limit=limit):
        density = torch.from_numpy(np.ascontiguousarray(batch["density"], dtype=np.float32))
        with runtime.autocast():
            if source == "truth":
                logits = model.segment_scores(density.to(runtime.device))
                read = np.asarray(batch["density"], dtype=np.float32)
            else:
                recon, logits = model.reconstruct_scores(density.to(runtime.device))
                read = recon.float().cpu().numpy()
        yield batch, read, (logits.float().cpu().numpy() if scores else None)


def decode_sample(
    decoder: str,
    scores: np.ndarray | None,
    reconstruction: np.ndarray,
    ckpt: Checkpoint,
    peaks: dict[str, Any] | None = None,
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Atoms of one sample by ``decoder`` (:data:`DECODERS`) from its U-Net logits
    ``(classes, n, n, n)`` or its reconstructed density ``(n, n, n)``; ``peaks`` keeps the
    sample's U-Net peaks (atom log-odds above ``threshold``, default the checkpoint's) for the
    next decoder. Returns ``(positions (n, 3) box Å, atomic numbers (n,) uint8)``."""
    peaks = {} if peaks is None else peaks
    threshold = ckpt.peak_threshold if threshold is None else threshold
    if decoder in ("unet-peaks", "unet-amplitudes", "unet-cell"):
        if "atoms" not in peaks:
            assert scores is not None, "U-Net decoders need the U-Net's scores"
            peaks["atoms"] = decode_class_scores(
                scores, ckpt.spec, ckpt.class_map, threshold=threshold
            )
        positions, numbers = peaks["atoms"]
        if decoder == "unet-peaks":
            return positions, numbers
        if decoder == "unet-cell":
            assert scores is not None
            electrons = fitted_electrons(reconstruction, positions, ckpt.spec)
            probabilities = species_probabilities(scores, positions, ckpt.spec, ckpt.class_map)
            return positions, ckpt.cell_species.assign(electrons, probabilities)
        return positions, fit_amplitudes(
            reconstruction, positions, ckpt.spec, offset=ckpt.amplitude_offset
        )
    if decoder == "unet-components":
        assert scores is not None, "U-Net decoders need the U-Net's scores"
        return decode_atoms(scores.argmax(axis=0), ckpt.spec, classes=ckpt.class_map)
    return fit_atoms(reconstruction, ckpt.spec)
