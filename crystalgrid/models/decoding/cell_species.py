"""Species read per cell: the atoms of one element share one atomic number.

A reconstruction keeps each atom's electrons only to about +-2 (the amplitudes of
:func:`~crystalgrid.models.decoding.peakfit.fitted_electrons`), and a segmenter's class scores
name elements weakly; read one atom at a time, few species come out exact. A crystal holds
few elements, so :class:`CellSpecies` reads the atoms of a sample together:

1. Each atom's evidence for each atomic number ``Z`` (a ``(n, 118)`` log-likelihood): a
   Gaussian of width ``sigma`` electrons about its fitted electrons plus ``offset``, plus
   ``segmenter_weight`` times the log of the segmenter's probability of ``Z`` at that atom.
2. The atoms, sorted by fitted electrons, are split into at most ``max_elements`` runs of
   neighbours. A run is one element: its atoms' evidence adds up, times a prior over the
   elements (how many training cells hold each, :func:`element_counts`), and the run's score
   is its evidence summed over ``Z`` (a marginal likelihood, so more runs are not free).
3. The split with the best total score wins (no two runs with the same element); each run
   takes its most probable ``Z``.

Averaging ``k`` atoms narrows an element's error by about ``sqrt(k)``, and the prior keeps
elements that crystals rarely hold from winning on a blurred amplitude. The settings are
tuned on a validation split with the peak threshold
(:func:`~crystalgrid.models.scoring.threshold.tune_threshold`) and travel with the checkpoint.

This module does not import torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations, pairwise
from typing import Any

import numpy as np

from crystalgrid.errors import ConfigError

__all__ = ["MAX_Z", "CellSpecies", "element_counts"]

#: Atomic numbers are read in ``[1, MAX_Z]``.
MAX_Z = 118
_Z = np.arange(1, MAX_Z + 1, dtype=np.float64)
_FLOOR = 1e-6  # smallest segmenter probability, so no element is ruled out by it alone


def element_counts(cells: Iterable[np.ndarray]) -> np.ndarray:
    """How many cells hold each element: ``(118,)`` int64, entry ``Z - 1`` for element ``Z``.

    Args:
        cells: one array of atomic numbers per cell (zeros, padding, are ignored).
    """
    counts = np.zeros(MAX_Z, dtype=np.int64)
    for numbers in cells:
        z = np.unique(np.asarray(numbers, dtype=np.int64))
        z = z[(z >= 1) & (z <= MAX_Z)]
        counts[z - 1] += 1
    return counts


@dataclass(frozen=True)
class CellSpecies:
    """The per-cell species reader (module docstring).

    Attributes:
        offset: electrons added to every fitted amplitude (a reconstruction holds fewer
            electrons than the atoms it decodes).
        sigma: electrons, the spread of one atom's amplitude about its ``Z``.
        segmenter_weight: weight of the segmenter's log probabilities (0: amplitudes only).
        counts: ``(118,)`` cells holding each element (:func:`element_counts`), the prior;
            empty for a uniform prior.
        smoothing: added to every count, so an element no training cell held stays possible.
        max_elements: most elements read in one sample.
    """

    offset: float = 0.0
    sigma: float = 2.0
    segmenter_weight: float = 0.0
    counts: tuple[int, ...] = field(default=())
    smoothing: float = 0.5
    max_elements: int = 3

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ConfigError(f"cell species: sigma must be positive, got {self.sigma}")
        if self.segmenter_weight < 0:
            raise ConfigError(
                f"cell species: segmenter_weight must be >= 0, got {self.segmenter_weight}"
            )
        if self.max_elements < 1:
            raise ConfigError(f"cell species: max_elements must be >= 1, got {self.max_elements}")
        if self.counts and len(self.counts) != MAX_Z:
            raise ConfigError(
                f"cell species: counts must hold {MAX_Z} entries (one per element), "
                f"got {len(self.counts)}"
            )

    @cached_property
    def log_prior(self) -> np.ndarray:
        """``(118,)`` log-probabilities of the elements."""
        counts = np.asarray(self.counts or np.zeros(MAX_Z), dtype=np.float64) + self.smoothing
        return np.log(counts / counts.sum())

    def evidence(self, electrons: np.ndarray, probabilities: np.ndarray | None) -> np.ndarray:
        """``(n, 118)`` log-likelihood of each ``Z`` for each atom.

        Args:
            electrons: ``(n,)`` fitted electrons.
            probabilities: ``(n, 118)`` the segmenter's probability of each ``Z`` (column
                ``Z - 1``), or ``None``.
        """
        e = np.asarray(electrons, dtype=np.float64).reshape(-1)
        log_l = -0.5 * ((e[:, None] + self.offset - _Z[None, :]) / self.sigma) ** 2
        if probabilities is not None and self.segmenter_weight > 0:
            p = np.asarray(probabilities, dtype=np.float64)
            if p.shape != (len(e), MAX_Z):
                raise ValueError(f"probabilities of shape {p.shape}, expected {(len(e), MAX_Z)}")
            log_l = log_l + self.segmenter_weight * np.log(np.maximum(p, _FLOOR))
        return log_l

    def assign(self, electrons: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
        """Atomic numbers of one sample's atoms, read together.

        Args:
            electrons: ``(n,)`` the atoms' fitted electrons.
            probabilities: ``(n, 118)`` the segmenter's probability of each ``Z`` at each atom
                (column ``Z - 1``), or ``None`` (amplitudes only).

        Returns:
            ``(n,)`` uint8 atomic numbers in ``[1, 118]``.
        """
        e = np.asarray(electrons, dtype=np.float64).reshape(-1)
        n = len(e)
        if n == 0:
            return np.zeros(0, dtype=np.uint8)
        order = np.argsort(e, kind="stable")
        sums = np.concatenate(
            [np.zeros((1, MAX_Z)), np.cumsum(self.evidence(e, probabilities)[order], 0)]
        )
        prior = self.log_prior
        runs: dict[tuple[int, int], tuple[float, int]] = {}

        def run(start: int, stop: int) -> tuple[float, int]:
            """(marginal log-likelihood, best Z) of atoms ``order[start:stop]`` as one element."""
            if (start, stop) not in runs:
                score = prior + sums[stop] - sums[start]
                top = float(score.max())
                marginal = top + float(np.log(np.exp(score - top).sum()))
                runs[start, stop] = (marginal, int(score.argmax()) + 1)
            return runs[start, stop]

        best_score = -np.inf
        best_cuts: tuple[int, ...] = ()
        for k in range(1, min(self.max_elements, n) + 1):
            for cuts in combinations(range(1, n), k - 1):
                bounds = (0, *cuts, n)
                parts = [run(a, b) for a, b in pairwise(bounds)]
                if len({z for _, z in parts}) < len(parts):
                    continue  # two runs read as one element: the split with fewer runs has it
                score = sum(s for s, _ in parts)
                if score > best_score:
                    best_score, best_cuts = score, cuts
        numbers = np.empty(n, dtype=np.uint8)
        bounds = (0, *best_cuts, n)
        for a, b in pairwise(bounds):
            numbers[order[a:b]] = run(a, b)[1]
        return numbers

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (the form kept in a checkpoint's metadata)."""
        return {
            "offset": self.offset,
            "sigma": self.sigma,
            "segmenter_weight": self.segmenter_weight,
            "counts": list(self.counts),
            "smoothing": self.smoothing,
            "max_elements": self.max_elements,
        }

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> CellSpecies:
        """The reader of :meth:`to_dict`'s settings; unknown keys are refused.

        Raises:
            ConfigError: an unknown key, or a setting out of its range.
        """
        known = {"offset", "sigma", "segmenter_weight", "counts", "smoothing", "max_elements"}
        unknown = set(entry) - known
        if unknown:
            raise ConfigError(f"cell species: unknown settings {sorted(unknown)}")
        values = dict(entry)
        values["counts"] = tuple(int(c) for c in values.get("counts", ()))
        return cls(**values)
