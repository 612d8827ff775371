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
decoder's ``amplitudes.offset``.

:func:`~crystalgrid.models.checkpoint.update_metadata` records the result with the checkpoint
(``metadata["decoder"]``), and :func:`~crystalgrid.models.scoring.evaluate.evaluate` then uses
it by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crystalgrid.contracts import ViewLike
from crystalgrid.errors import CrystalgridError
from crystalgrid.models.checkpoint import (
    DECODER_METADATA,
    Checkpoint,
    as_checkpoint,
    update_metadata,
)
from crystalgrid.models.decoding.peakfit import atomic_numbers, fitted_electrons
from crystalgrid.models.decoding.segmentation import class_score_peaks
from crystalgrid.models.runtime import resolve_runtime
from crystalgrid.models.scoring.distances import nearest_distances
from crystalgrid.models.scoring.evaluate import SOURCES, check_spec, model_outputs
from crystalgrid.models.scoring.metrics import Scorer

__all__ = ["THRESHOLDS", "record_tuning", "tune_threshold", "tuning_table"]

#: The candidate atom log-odds thresholds (``P(atom)`` from 0.12 to 0.998).
THRESHOLDS: tuple[float, ...] = (-2.0, -1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)


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
        quiet: no progress bar.

    Returns:
        ``{"threshold": the best, "criterion": "f1", "source", "n_samples",
        "match_radius", "table": [{"threshold", "n_pred_atoms", "n_true_atoms", "recall",
        "precision", "f1", "count_exact"}, ...], "amplitudes": {"offset", "n_atoms",
        "species_exact", "species_exact_uncalibrated"}}``, JSON-ready, one row per
        candidate; ``"amplitudes"`` (the calibration at the best threshold) is ``None`` for
        ``source="truth"`` or where no atom matched.

    Raises:
        CrystalgridError: no candidates, an unknown ``source``, an empty split or a split
            whose grid spec is not the checkpoint's.
    """
    from tqdm.auto import tqdm

    if not thresholds:
        raise CrystalgridError("give at least one candidate threshold")
    if source not in SOURCES:
        raise CrystalgridError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    ckpt = as_checkpoint(checkpoint)
    check_spec(ckpt, view)
    runtime = resolve_runtime(device, precision or "auto", compile=False)
    scorers = {float(t): Scorer(match_radius=match_radius) for t in thresholds}
    lowest = min(scorers)
    total = len(view) if limit is None else min(limit, len(view))
    if total == 0:
        raise CrystalgridError("the split to tune the threshold on is empty")
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
                kept.append((grids[i], pos, log_odds, *truth))
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
    return {
        "threshold": best["threshold"],
        "criterion": "f1",
        "source": source,
        "n_samples": total,
        "match_radius": match_radius,
        "table": table,
        "amplitudes": _calibrate_amplitudes(kept, best["threshold"], ckpt, match_radius),
    }


def _calibrate_amplitudes(
    samples: list[tuple[Any, ...]], threshold: float, ckpt: Checkpoint, match_radius: float
) -> dict[str, Any] | None:
    """The electrons to add to the amplitudes fitted at the peaks kept at ``threshold``: the
    median of (true Z - fitted electrons) over the peaks matched to a true atom within
    ``match_radius``, with the exact species before and after."""
    shortfall: list[np.ndarray] = []
    fitted: list[np.ndarray] = []
    for grid, pos, log_odds, true_pos, true_z in samples:
        pos = pos[log_odds > threshold]
        if not len(pos) or not len(true_pos):
            continue
        electrons = fitted_electrons(grid, pos, ckpt.spec)
        distance, nearest = nearest_distances(pos, np.asarray(true_pos, dtype=np.float64))
        matched = distance <= match_radius
        true_numbers = np.asarray(true_z, dtype=np.float64)[nearest[matched]]
        shortfall.append(true_numbers - electrons[matched])
        fitted.append(electrons[matched])
    if not shortfall or not sum(len(s) for s in shortfall):
        return None
    gaps, electrons = np.concatenate(shortfall), np.concatenate(fitted)
    offset = round(float(np.median(gaps)), 2)
    numbers = gaps + electrons

    def exact(shift: float) -> float:  # rounded as the decoder rounds
        return float(np.mean(atomic_numbers(electrons + shift) == numbers))

    return {
        "offset": offset,
        "n_atoms": len(gaps),
        "species_exact": exact(offset),
        "species_exact_uncalibrated": exact(0.0),
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
