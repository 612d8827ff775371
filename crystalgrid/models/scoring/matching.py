"""Reconstructions scored the way crystal generative models are compared today: pymatgen's
``StructureMatcher`` with CDVAE's settings (Xie et al. 2022, ``scripts/compute_metrics.py``).

**The lattice is given, not predicted.** A grid model predicts atoms in a 10 Å box, not a unit
cell. For a ``single`` sample (one cell placed in the box with a known rigid transform), the
decoded atoms are mapped back into the crystal's Cartesian frame with the inverse of the
sample's transform, put into the crystal's *true* lattice and wrapped into the cell; that
structure is then matched against the true one. The score therefore measures the atoms
(positions and species) and nothing of the lattice, which CDVAE-style models must predict
too: it is not directly comparable with their numbers.

Definitions (as CDVAE's ``RecEval``): ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``
(pymatgen's other defaults: primitive cells, scaling on, no supercells); a sample matches when
``get_rms_dist(predicted, true)`` is not ``None``; ``match_rate`` = matched / all samples;
``rms_mean`` = mean over the matched samples of pymatgen's RMS displacement, normalised by
``(volume / atoms)^(1/3)``. As in CDVAE, a prediction that is not structurally valid (two
atoms closer than 0.5 Å with periodic images, volume <= 0.1 Å^3, or no atom) is not matched;
CDVAE's composition validity (SMACT charge balance) is not applied here.

Only ``single`` samples have a cell to map back to; ``repeated`` crops do not. A rotated cell
can stick out of the box (``n_outside > 0``): its atoms outside the box are in neither the
grid nor the ground truth, so such a sample cannot match; the scores are also reported for the
*complete* cells alone.

This module does not import torch (except :func:`match_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from crystalgrid.contracts import iter_view
from crystalgrid.errors import CrystalgridError
from crystalgrid.validity import MIN_DISTANCE, MIN_VOLUME

if TYPE_CHECKING:
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Lattice, Structure

    from crystalgrid.models.checkpoint import Checkpoint

__all__ = [
    "CDVAE_MATCHER",
    "LATTICE_NOTE",
    "MatchScorer",
    "cdvae_matcher",
    "crystal_indices",
    "match_checkpoint",
    "periodic_validity",
    "to_crystal_frame",
]

#: CDVAE's StructureMatcher settings.
CDVAE_MATCHER: dict[str, float] = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}

_SIZE_BINS = ((1, 4), (5, 8), (9, 16), (17, 10**9))

#: Said in every result and by the CLI: what this score does and does not measure.
LATTICE_NOTE = (
    "the lattice is given, not predicted: decoded atoms are mapped back with the sample's "
    "inverse transform into the true lattice of the crystal and wrapped into the cell; "
    "only the atoms (positions, species) are scored"
)


def cdvae_matcher() -> StructureMatcher:
    """``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``, CDVAE's reconstruction matcher."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**cast(dict[str, Any], CDVAE_MATCHER))


def to_crystal_frame(
    positions: np.ndarray,
    numbers: np.ndarray,
    *,
    transform: np.ndarray,
    lattice: Lattice | np.ndarray,
) -> Structure:
    """Decoded atoms (box frame) as a periodic Structure in the crystal's true lattice.

    Args:
        positions: ``(n, 3)`` Å in the box frame.
        numbers: ``(n,)`` atomic numbers.
        transform: ``(4, 4)`` the sample's map from crystal Cartesian Å to box Å
            (``box = T[:3, :3] @ r + T[:3, 3]``).
        lattice: the true lattice (a pymatgen ``Lattice`` or ``(3, 3)`` rows = vectors, Å).

    Returns:
        The Structure, sites wrapped into the cell (fractional coordinates in [0, 1)).
    """
    from pymatgen.core import Lattice, Structure

    t = np.asarray(transform, dtype=np.float64)
    box = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    cart = np.linalg.solve(t[:3, :3], (box - t[:3, 3]).T).T
    lat = lattice if isinstance(lattice, Lattice) else Lattice(np.asarray(lattice, dtype=float))
    return Structure(
        lat,
        cast(list[Any], [int(z) for z in np.asarray(numbers).reshape(-1)]),
        cart,
        coords_are_cartesian=True,
        to_unit_cell=True,
    )


def periodic_validity(
    structure: Structure, *, min_dist: float = MIN_DISTANCE, min_volume: float = MIN_VOLUME
) -> bool:
    """CDVAE's structural validity of a periodic structure: at least one site, no two sites
    (periodic images included) closer than ``min_dist`` Å, volume above ``min_volume`` Å^3."""
    if len(structure) == 0 or not structure.volume > min_volume:
        return False
    # As CDVAE: a site's distance to itself never fails (one site alone is valid).
    dist = structure.distance_matrix + np.eye(len(structure)) * min_dist
    return bool(dist.min() >= min_dist)


class MatchScorer:
    """Accumulates StructureMatcher comparisons of reconstructed single cells.

    Args:
        matcher: default :func:`cdvae_matcher`.
    """

    def __init__(self, matcher: StructureMatcher | None = None) -> None:
        self.matcher = matcher or cdvae_matcher()
        self._rms: list[float] = []
        self._rms_complete: list[float] = []
        self.n_samples = self.n_valid = self.n_matched = 0
        self.n_complete = self.n_complete_matched = 0
        self._sizes: list[tuple[int, bool]] = []  # (true sites, matched) per sample

    def add(
        self,
        pred_positions: np.ndarray,
        pred_numbers: np.ndarray,
        *,
        transform: np.ndarray,
        true_structure: Structure,
        complete: bool = True,
    ) -> dict[str, Any]:
        """Score one sample.

        Args:
            pred_positions: ``(n, 3)`` box Å; pred_numbers: ``(n,)``.
            transform: ``(4, 4)`` crystal Cartesian Å -> box Å of the sample.
            true_structure: the source crystal (its lattice is used for the prediction).
            complete: whether the whole cell lay inside the box (``n_outside == 0``).

        Returns:
            ``{"valid", "matched", "rms", "n_pred", "n_true"}`` of this sample.
        """
        if len(pred_numbers) == 0:
            return self.add_structure(None, true_structure, complete=complete)
        pred = to_crystal_frame(
            pred_positions, pred_numbers, transform=transform, lattice=true_structure.lattice
        )
        return self.add_structure(pred, true_structure, complete=complete)

    def add_structure(
        self, pred: Structure | None, true_structure: Structure, *, complete: bool = True
    ) -> dict[str, Any]:
        """Score one predicted periodic structure (``None``: nothing predicted) against the
        true one; the record of :meth:`add`."""
        self.n_samples += 1
        self.n_complete += bool(complete)
        record: dict[str, Any] = {
            "valid": False,
            "matched": False,
            "rms": None,
            "n_pred": 0 if pred is None else len(pred),
            "n_true": len(true_structure),
        }
        self._sizes.append((len(true_structure), False))
        if pred is None or not periodic_validity(pred):
            return record
        record["valid"] = True
        self.n_valid += 1
        rms = self.matcher.get_rms_dist(pred, true_structure)
        if rms is not None:
            record["matched"], record["rms"] = True, float(rms[0])
            self._sizes[-1] = (len(true_structure), True)
            self.n_matched += 1
            self._rms.append(float(rms[0]))
            if complete:
                self.n_complete_matched += 1
                self._rms_complete.append(float(rms[0]))
        return record

    def _by_size(self) -> dict[str, dict[str, Any]]:
        """Match rate by the true cell's number of sites (1-4, 5-8, 9-16, 17+)."""
        out: dict[str, dict[str, Any]] = {}
        for lo, hi in _SIZE_BINS:
            picked = [m for n, m in self._sizes if lo <= n <= hi]
            key = f"{lo}-{hi}" if hi < 10**9 else f"{lo}+"
            out[key] = {
                "n_samples": len(picked),
                "match_rate": sum(picked) / len(picked) if picked else None,
            }
        return out

    def result(self) -> dict[str, Any]:
        """The aggregate: ``match_rate``, ``rms_mean``, the same over complete cells, and the
        match rate by the true cell's number of sites (``by_cell_size``)."""

        def frac(a: int, b: int) -> float | None:
            return a / b if b else None

        return {
            "n_samples": self.n_samples,
            "n_valid": self.n_valid,
            "n_matched": self.n_matched,
            "match_rate": frac(self.n_matched, self.n_samples),
            "rms_mean": float(np.mean(self._rms)) if self._rms else None,
            "valid_rate": frac(self.n_valid, self.n_samples),
            "complete_cells": {
                "n_samples": self.n_complete,
                "n_matched": self.n_complete_matched,
                "match_rate": frac(self.n_complete_matched, self.n_complete),
                "rms_mean": float(np.mean(self._rms_complete)) if self._rms_complete else None,
            },
            "by_cell_size": self._by_size(),
            "matcher": {
                **CDVAE_MATCHER,
                "primitive_cell": self.matcher._primitive_cell,
                "scale": self.matcher._scale,
                "attempt_supercell": self.matcher._supercell,
            },
            "validity_gate": (
                "structural (no two sites closer than 0.5 Å with periodic images, volume > "
                "0.1 Å^3, at least one atom); CDVAE's composition validity (SMACT) not applied"
            ),
            "lattice": LATTICE_NOTE,
        }


def crystal_indices(view: Any) -> np.ndarray:
    """``(n_samples,)`` the crystal index of every sample of the view's store."""
    dataset = getattr(view, "dataset", None)
    if dataset is None or not hasattr(dataset, "structure"):
        raise CrystalgridError("structure matching needs a split of a crystalgrid store")
    return np.asarray(dataset.per_sample("crystal"))


def match_checkpoint(
    checkpoint: str | Path | Checkpoint | None,
    view: Any,
    *,
    limit: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    precision: str | None = None,
    ceiling: bool = True,
    baseline: bool = True,
    seed: int = 0,
    decoder: str = "unet-components",
    quiet: bool = True,
) -> dict[str, Any]:
    """StructureMatcher scores of a checkpoint's reconstructions of a ``single`` split.

    Each sample is encoded, the posterior mean decoded and segmented, the atoms decoded and
    matched as described in the module docstring.

    Args:
        checkpoint: a path or a loaded checkpoint; ``None`` scores only the ceiling.
        view: a split of a ``single`` store (``open_dataset(path).split(name)``).
        limit: score the first ``limit`` samples.
        batch_size, device, precision: as in :func:`crystalgrid.models.scoring.evaluate.evaluate`.
        ceiling: also score the *true* species grids decoded the same way (what a perfect
            VAE + U-Net would reach).
        baseline: also score a random baseline: each true cell's species at uniformly random
            fractional positions (seeded by ``seed``) in the true lattice. CDVAE's tolerances
            are loose for small cells, so this baseline is far from zero (see the docs).
        seed: the baseline's seed.
        decoder: how a reconstruction becomes atoms, one of
            :data:`~crystalgrid.models.scoring.evaluate.DECODERS` but ``"peakfit"`` (the
            paper's connected components of the U-Net's argmax by default).
        quiet: no progress bar.

    Returns:
        :meth:`MatchScorer.result` plus ``"ceiling"`` (with ``ceiling``),
        ``"random_baseline"`` (with ``baseline``) and ``"checkpoint"``.

    Raises:
        CrystalgridError: for a ``repeated`` store, a grid spec that differs or an unknown
            decoder.
    """
    from pymatgen.core import Structure
    from tqdm.auto import tqdm

    from crystalgrid.models.decoding.segmentation import decode_atoms
    from crystalgrid.models.scoring.evaluate import UNET_DECODERS, decode_sample

    dataset: Any = getattr(view, "dataset", None)
    if getattr(dataset, "representation", "single") != "single":
        raise CrystalgridError(
            "structure matching needs single-cell samples (a repeated crop has no cell to "
            f"map back to); this store is {dataset.representation!r}"
        )
    if decoder not in UNET_DECODERS:
        raise CrystalgridError(
            f"decoder must be one of {', '.join(UNET_DECODERS)}, got {decoder!r}"
        )
    crystals = crystal_indices(view)
    spec = view.spec
    ckpt = None
    batches: Iterator[tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]]
    if checkpoint is not None:
        from crystalgrid.models.checkpoint import as_checkpoint
        from crystalgrid.models.runtime import resolve_runtime
        from crystalgrid.models.scoring.evaluate import check_spec, model_outputs

        ckpt = as_checkpoint(checkpoint)
        check_spec(ckpt, view)
        runtime = resolve_runtime(device, precision or "auto", compile=False)
        batches = model_outputs(ckpt, view, runtime, batch_size=batch_size, limit=limit)
    else:
        batches = ((batch, None, None) for batch in iter_view(view, batch_size, limit=limit))
    scorer = MatchScorer() if ckpt is not None else None
    oracle = MatchScorer() if ceiling or ckpt is None else None
    guesses = MatchScorer() if baseline else None
    rng = np.random.default_rng(seed)
    structures: dict[int, Structure] = {}
    total = len(view) if limit is None else min(limit, len(view))
    bar = tqdm(total=total, desc="match", disable=quiet, leave=False)
    for batch, reconstructions, logits in batches:
        for i, index in enumerate(np.asarray(batch["index"])):
            c = int(crystals[index])
            if c not in structures:
                structures[c] = dataset.structure(c)
            true = structures[c]
            complete = int(batch["n_outside"][i]) == 0
            transform = batch["transform"][i]
            if scorer is not None and ckpt is not None:
                assert reconstructions is not None and logits is not None
                pos, z = decode_sample(decoder, logits[i], reconstructions[i], ckpt)
                scorer.add(pos, z, transform=transform, true_structure=true, complete=complete)
            if oracle is not None:
                pos, z = decode_atoms(np.asarray(batch["species"][i]), spec)
                oracle.add(pos, z, transform=transform, true_structure=true, complete=complete)
            if guesses is not None:
                guess = Structure(true.lattice, true.species, rng.random((len(true), 3)))
                guesses.add_structure(guess, true, complete=complete)
        bar.update(len(batch["index"]))
    bar.close()
    if scorer is not None:
        result = scorer.result()
        if oracle is not None:
            result["ceiling"] = oracle.result()
    else:
        result = {"ceiling": oracle.result()} if oracle is not None else {}
        result["lattice"] = LATTICE_NOTE
    if guesses is not None:
        result["random_baseline"] = guesses.result()
    if ckpt is not None:
        result["checkpoint"] = ckpt.identity()
        result["decoder"] = decoder
    return result
