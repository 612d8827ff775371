"""The U-Net peak decoder's threshold, tuned on a split the scores do not report.

:func:`~crystalgrid.models.decoding.segmentation.decode_class_scores` keeps a local maximum
of the U-Net's atom log-odds when it is above a threshold (0: ``P(atom) >= 0.5``). A segmenter
trained with the atom classes weighted up finds atoms generously: on crops, whose atoms lie
within 0.5 Å of a face a third of the time, it also marks atoms just outside the box, and on
imperfect reconstructions it marks bumps. :func:`tune_threshold` runs the model once over a
split (the validation split: tuning on the reported split would flatter it), decodes the same
scores at every candidate threshold and keeps the one with the best F1 of atoms matched within
``match_radius``:

- recall: the true atoms with a predicted atom within r (``true_within_radius``);
- precision: the predicted atoms with a true atom within r (``pred_within_radius``);
- F1: their harmonic mean; ties go to the threshold nearest 0.

On reconstructions it also calibrates the ``unet-amplitudes`` decoder's species: the
amplitudes fitted to a reconstruction at the kept peaks hold fewer electrons than the atoms
matched to them, and the median shortfall, added back before rounding, is recorded as the
decoder's ``amplitudes.offset``; and the ``unet-cell`` decoder's per-cell species reader
(:class:`~crystalgrid.models.decoding.cell_species.CellSpecies`): the amplitudes' spread and
the U-Net scores' weight that read the most species exact, with the elements' prior counted on
the training split (:func:`split_element_counts`), recorded as ``cell_species``.

:func:`~crystalgrid.models.checkpoint.update_metadata` records the result with the checkpoint
(``metadata["decoder"]``), and :func:`~crystalgrid.models.scoring.evaluate.evaluate` then uses
it by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crystalgrid.contracts import ViewLike, iter_view
from crystalgrid.errors import BadInputError
from crystalgrid.models.checkpoint import (
    DECODER_METADATA,
    Checkpoint,
    as_checkpoint,
    update_metadata,
)
from crystalgrid.models.decoding.cell_species import CellSpecies, element_counts
from crystalgrid.models.decoding.peakfit import atomic_numbers, fitted_electrons
from crystalgrid.models.decoding.segmentation import class_score_peaks, species_probabilities
from crystalgrid.models.runtime import resolve_runtime
from crystalgrid.models.scoring.distances import nearest_distances
from crystalgrid.models.scoring.evaluate import SOURCES, check_spec, model_outputs
from crystalgrid.models.scoring.metrics import Scorer

__all__ = [
    "CELL_SIGMAS",
    "CELL_WEIGHTS",
    "THRESHOLDS",
    "record_tuning",
    "split_element_counts",
    "tune_threshold",
    "tuning_table",
]

#: The candidate atom log-odds thresholds (``P(atom)`` from 0.12 to 0.998).
THRESHOLDS: tuple[float, ...] = (-2.0, -1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)

#: The candidate spreads (electrons) of one atom's amplitude, for the per-cell species reader.
CELL_SIGMAS: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0)
#: The candidate weights of the U-Net's log probabilities, for the per-cell species reader.
CELL_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


def split_element_counts(view: ViewLike, *, batch_size: int = 256) -> np.ndarray:
    """How many samples of a split hold each element (``(118,)``, entry ``Z - 1``): the
    per-cell species reader's prior, counted on a training split."""
    cells: list[np.ndarray] = []
    for batch in iter_view(view, batch_size, fields=("atom_numbers",)):
        cells.extend(np.asarray(z) for z in batch["atom_numbers"])
    return element_counts(cells)


def tune_threshold(
    checkpoint: str | Path | Checkpoint,
    view: ViewLike,
    *,
    thresholds: tuple[float, ...] = THRESHOLDS,
    limit: int | None = 200,
    batch_size: int = 32,
    device: str = "auto",
    precision: str | None = None,
    match_radius: float = 0.5,
    source: str = "reconstruction",
    element_prior: np.ndarray | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """The peak threshold with the best F1 of matched atoms on ``view`` (module docstring).

    Args:
        checkpoint: a path, a shipped name or a loaded checkpoint.
        view: the split to tune on (the validation split), with ``density``,
            ``atom_positions`` and ``atom_numbers``; ``limit``: its first samples only.
        thresholds: the candidates, atom log-odds.
        batch_size, device, precision: of the forward passes (precision ``None``: ``"auto"``,
            bf16 where the processor runs it natively).
        match_radius: Å, a predicted and a true atom this close match.
        source: ``"reconstruction"`` (the model's chain) or ``"truth"`` (the U-Net alone).
        element_prior: ``(118,)`` samples holding each element on the training split
            (:func:`split_element_counts`), the per-cell species reader's prior; ``None``:
            a uniform prior.
        quiet: no progress bar.

    Returns:
        ``{"threshold": the best, "criterion": "f1", "source", "n_samples",
        "match_radius", "table": [{"threshold", "n_pred_atoms", "n_true_atoms", "recall",
        "precision", "f1", "count_exact"}, ...], "amplitudes": {"offset", "n_atoms",
        "species_exact", "species_exact_uncalibrated"}, "cell_species": CellSpecies
        settings, "cell_species_tuning": {"species_exact", "species_exact_amplitudes",
        "n_atoms", "grid": [{"sigma", "segmenter_weight", "species_exact"}, ...]}}``,
        JSON-ready, one row per candidate; the two calibrations (at the best threshold) are
        ``None`` for ``source="truth"`` or where no atom matched.

    Raises:
        BadInputError: no candidates, an unknown ``source``, an empty split, or a split
            whose grid spec is not the checkpoint's.
    """
    from tqdm.auto import tqdm

    if not thresholds:
        raise BadInputError("give at least one candidate threshold")
    if source not in SOURCES:
        raise BadInputError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    ckpt = as_checkpoint(checkpoint)
    check_spec(ckpt, view)
    runtime = resolve_runtime(device, precision or "auto", compile=False)
    scorers = {float(t): Scorer(match_radius=match_radius) for t in thresholds}
    lowest = min(scorers)
    total = len(view) if limit is None else min(limit, len(view))
    if total == 0:
        raise BadInputError("the split to tune the threshold on is empty")
    bar = tqdm(total=total, desc="tune threshold", disable=quiet, leave=False)
    outputs = model_outputs(ckpt, view, runtime, batch_size=batch_size, limit=limit, source=source)
    kept: list[tuple[Any, ...]] = []  # per sample, for the amplitudes' calibration
    for batch, grids, logits in outputs:
        assert logits is not None  # model_outputs returns scores by default
        for i in range(len(logits)):
            # The peaks at the lowest threshold; each higher one keeps those above it.
            pos, z, log_odds = class_score_peaks(
                logits[i], ckpt.spec, ckpt.class_map, threshold=lowest
            )
            if source == "reconstruction":
                truth = (batch["atom_positions"][i], batch["atom_numbers"][i])
                probabilities = species_probabilities(logits[i], pos, ckpt.spec, ckpt.class_map)
                kept.append((grids[i], pos, log_odds, probabilities, *truth))
            for threshold, scorer in scorers.items():
                keep = log_odds > threshold
                scorer.add(
                    pos[keep],
                    z[keep],
                    true_positions=batch["atom_positions"][i],
                    true_numbers=batch["atom_numbers"][i],
                )
        bar.update(len(logits))
    bar.close()
    table = [_row(threshold, scorer.result()) for threshold, scorer in scorers.items()]
    best = max(table, key=lambda row: (row["f1"], -abs(row["threshold"])))
    matched = _matched_atoms(kept, best["threshold"], ckpt, match_radius)
    amplitudes = _calibrate_amplitudes(matched)
    cell = (
        _calibrate_cell_species(matched, amplitudes["offset"], element_prior)
        if amplitudes is not None
        else None
    )
    return {
        "threshold": best["threshold"],
        "criterion": "f1",
        "source": source,
        "n_samples": total,
        "match_radius": match_radius,
        "table": table,
        "amplitudes": amplitudes,
        "cell_species": cell[0].to_dict() if cell else None,
        "cell_species_tuning": cell[1] if cell else None,
    }


def _matched_atoms(
    samples: list[tuple[Any, ...]], threshold: float, ckpt: Checkpoint, match_radius: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per sample, at the peaks kept at ``threshold``: ``(fitted electrons (n,), U-Net
    species probabilities (n, 118), true Z of the atom within ``match_radius``, 0 where none
    (n,))``; samples without a kept peak or a true atom are left out."""
    out = []
    for grid, pos, log_odds, probabilities, true_pos, true_z in samples:
        keep = log_odds > threshold
        true_z = np.asarray(true_z)
        real = true_z > 0
        if not keep.any() or not real.any():
            continue
        electrons = fitted_electrons(grid, pos[keep], ckpt.spec)
        true_pos = np.asarray(true_pos, dtype=np.float64)[real]
        distance, nearest = nearest_distances(pos[keep], true_pos)
        numbers = np.where(distance <= match_radius, true_z[real][nearest], 0)
        out.append((electrons, probabilities[keep], numbers))
    return out


def _calibrate_amplitudes(
    matched: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> dict[str, Any] | None:
    """The electrons to add to the amplitudes fitted at the kept peaks: the median of (true
    Z - fitted electrons) over the peaks matched to a true atom, with the exact species before
    and after."""
    electrons = np.concatenate([e[z > 0] for e, _, z in matched] or [np.zeros(0)])
    numbers = np.concatenate([z[z > 0] for _, _, z in matched] or [np.zeros(0)])
    if not len(numbers):
        return None
    offset = round(float(np.median(numbers - electrons)), 2)

    def exact(shift: float) -> float:  # rounded as the decoder rounds
        return float(np.mean(atomic_numbers(electrons + shift) == numbers))

    return {
        "offset": offset,
        "n_atoms": len(numbers),
        "species_exact": exact(offset),
        "species_exact_uncalibrated": exact(0.0),
    }


def _calibrate_cell_species(
    matched: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    offset: float,
    element_prior: np.ndarray | None,
) -> tuple[CellSpecies, dict[str, Any]]:
    """The per-cell species reader whose spread and U-Net weight (:data:`CELL_SIGMAS` x
    :data:`CELL_WEIGHTS`) read the most matched atoms' species exact, amplitudes offset by
    ``offset``; with every candidate's share."""
    counts = () if element_prior is None else tuple(int(c) for c in element_prior)
    n_atoms = sum(int((z > 0).sum()) for _, _, z in matched)
    grid = []
    best: tuple[float, CellSpecies] | None = None
    for sigma in CELL_SIGMAS:
        for weight in CELL_WEIGHTS:
            reader = CellSpecies(offset=offset, sigma=sigma, segmenter_weight=weight, counts=counts)
            right = sum(int((reader.assign(e, p)[z > 0] == z[z > 0]).sum()) for e, p, z in matched)
            share = right / n_atoms
            grid.append({"sigma": sigma, "segmenter_weight": weight, "species_exact": share})
            if best is None or share > best[0]:
                best = (share, reader)
    assert best is not None
    single = sum(  # each atom on its own: the unet-amplitudes decoder's rounding
        int((atomic_numbers(e + offset)[z > 0] == z[z > 0]).sum()) for e, _, z in matched
    )
    return best[1], {
        "species_exact": best[0],
        "species_exact_amplitudes": single / n_atoms,
        "n_atoms": n_atoms,
        "grid": grid,
    }


def tuning_table(tuning: dict[str, Any]) -> list[str]:
    """The lines of a markdown table of :func:`tune_threshold`'s candidates, the best marked."""
    lines = [
        "| threshold | predicted / true atoms | recall | precision | F1 | exact counts |",
        "|---|---|---|---|---|---|",
    ]
    for row in tuning["table"]:
        mark = " (best)" if row["threshold"] == tuning["threshold"] else ""
        exact = row["count_exact"]
        lines.append(
            f"| {row['threshold']:g}{mark} | {row['n_pred_atoms']} / {row['n_true_atoms']} | "
            f"{100 * row['recall']:.1f}% | {100 * row['precision']:.1f}% | {row['f1']:.3f} | "
            + ("n/a" if exact is None else f"{100 * exact:.1f}%")
            + " |"
        )
    amplitudes = tuning.get("amplitudes")
    if amplitudes:
        lines += [
            "",
            f"Species from the amplitudes at the best threshold's peaks (the unet-amplitudes "
            f"decoder): {amplitudes['offset']:+.2f} electrons added before rounding, "
            f"{100 * amplitudes['species_exact']:.1f}% of {amplitudes['n_atoms']} matched atoms "
            f"exact ({100 * amplitudes['species_exact_uncalibrated']:.1f}% without).",
        ]
    cell, tuned = tuning.get("cell_species"), tuning.get("cell_species_tuning")
    if cell and tuned:
        lines += [
            "",
            f"Species read per cell (the unet-cell decoder): amplitudes' spread "
            f"{cell['sigma']:g} electrons, U-Net scores weighted {cell['segmenter_weight']:g}, "
            f"{100 * tuned['species_exact']:.1f}% of {tuned['n_atoms']} matched atoms exact "
            f"({100 * tuned['species_exact_amplitudes']:.1f}% one atom at a time).",
        ]
    return lines


def record_tuning(path: str | Path, tuning: dict[str, Any]) -> Path:
    """Record :func:`tune_threshold`'s result, without its table, in the checkpoint file
    ``path`` (``metadata["decoder"]``; :func:`~crystalgrid.models.checkpoint.update_metadata`:
    atomic, never a shipped model)."""
    entry = {k: v for k, v in tuning.items() if k != "table"}
    return update_metadata(path, **{DECODER_METADATA: entry})


def _row(threshold: float, result: dict[str, Any]) -> dict[str, Any]:
    """One candidate's line of the tuning table from its :meth:`Scorer.result`."""
    recall = result["true_within_radius"] or 0.0
    precision = result["pred_within_radius"] or 0.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return {
        "threshold": threshold,
        "n_true_atoms": result["n_true_atoms"],
        "n_pred_atoms": result["n_pred_atoms"],
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "count_exact": result["count_exact"],
    }
