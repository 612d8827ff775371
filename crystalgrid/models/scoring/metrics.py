"""The paper's reconstruction scores (Table 1 and section 4), on atoms, as JSON and markdown.

Every score compares predicted atoms (decoded from the segmentation) with the ground-truth
atoms of the store (positions in Å in the box frame, atomic numbers), never with voxel
centres. Distances are plain Euclidean distances in the box, without periodic images.

Definitions (``r`` = ``match_radius``, 0.5 Å by default):

- ``pred_to_true``: for every predicted atom, the distance to the nearest true atom of its
  sample; ``true_to_pred`` the other way round. Percentiles 0, 10, ..., 100 (numpy's linear
  interpolation) over all atoms of all samples.
- ``true_within_radius``: the fraction of true atoms whose nearest predicted atom is within r
  (recall); ``pred_within_radius`` the fraction of predicted atoms with a true atom within r
  (precision: extra atoms lower it, missed ones do not).
- ``count_exact`` / ``count_within``: the fraction of samples whose number of predicted atoms
  equals the true number / differs by at most ``count_tolerance`` (2).
- Species, over the *matched* true atoms (nearest predicted atom within r; several true atoms
  may share one predicted atom): ``species_exact`` (same Z), ``dz_histogram`` (fractions with
  |dZ| = 0, 1, 2, >= 3) and ``same_group`` (same periodic-table group, pymatgen's
  ``Element.group``; lanthanides and actinides are group 3).
- ``voxel_mse``: per-sample mean squared error between the predicted and the true density
  grid (Å^-6), percentiles over samples, and its mean.
- ``interior`` (with ``interior=(side, margin)``): recall, precision and species of the atoms
  at least ``margin`` Å from every face of the box (true atoms for recall, predicted atoms
  for precision; their matches may lie anywhere). A crop's density holds the periodic images
  just outside each face while its true atoms are only those inside, so atoms near a face
  are where a crop's labels and its density disagree; the interior scores leave them out.

Empty sets never produce NaN: a sample without predicted atoms adds no distances, its true
atoms count as unmatched (``true_without_pred``) and fail ``true_within_radius``; a sample
without true atoms adds its predicted atoms to ``pred_without_true``. A score with nothing to
average over (e.g. percentiles of an empty pool, species with no matched atom) is ``None``.

This module does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from crystalgrid.models.scoring.distances import nearest_distances

__all__ = [
    "PAPER_REPEATED",
    "PAPER_SINGLE",
    "PERCENTILES",
    "Scorer",
    "percentiles",
    "score_samples",
    "to_markdown",
]

PERCENTILES: tuple[int, ...] = tuple(range(0, 101, 10))

#: The paper's single-cell results (Hoffmann et al. 2019, Table 1 and section 4).
PAPER_SINGLE: dict[str, Any] = {
    "pred_to_true": dict(
        zip(
            (str(p) for p in PERCENTILES),
            (0.0004, 0.050, 0.070, 0.091, 0.114, 0.136, 0.160, 0.194, 0.248, 0.394, 2.59),
            strict=True,
        )
    ),
    "true_within_radius": 0.99,
    "count_exact": 0.90,
    "count_within": 0.97,
    "species_exact": 0.668,
    "dz_histogram": {"0": 0.668, "1": 0.251, "2": 0.058, ">=3": 0.022},
    # The paper's 93% comes from a network it retrained to predict groups, not from the
    # species its segmenter read: the two are not the same measurement.
    "same_group": 0.93,
}

#: The paper's repeated-crop results (section 4): 90% of atoms within 0.5 Å, species exact
#: for 65.4% of the atoms within 0.5 Å (half the atoms within 0.2 Å).
PAPER_REPEATED: dict[str, Any] = {
    "true_within_radius": 0.90,
    "species_exact": 0.654,
}


@cache
def _group_table() -> np.ndarray:
    from pymatgen.core.periodic_table import Element

    table = np.zeros(256, dtype=np.int64)  # 0: unknown
    for z in range(1, 119):
        table[z] = Element.from_Z(z).group
    return table


def percentiles(
    values: np.ndarray | Sequence[np.ndarray], pcts: Sequence[int] = PERCENTILES
) -> dict[str, float] | None:
    """Percentiles of ``values`` (numpy's linear interpolation), keyed by ``str(p)``.

    Args:
        values: an array, or a list of arrays pooled together.
        pcts: the percentiles, 0..100.

    Returns:
        ``{"0": ..., "10": ..., ...}``; ``None`` when there is no value at all.
    """
    if isinstance(values, list):
        arr = np.concatenate(values) if values else np.zeros(0)
    else:
        arr = np.asarray(values)
    if arr.size == 0:
        return None
    return {str(p): float(v) for p, v in zip(pcts, np.percentile(arr, pcts), strict=True)}


def _frac(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


class Scorer:
    """Accumulates per-sample comparisons and reports the aggregate scores.

    Args:
        match_radius: Å; true atoms with a predicted atom this close are matched.
        count_tolerance: the atom-count score's +- tolerance.
        percentiles: percentiles to report.
        interior: ``(side, margin)`` Å: also score the atoms at least ``margin`` from every
            face of a box ``[0, side]^3`` (``"interior"`` in the result); ``None``: not.
    """

    def __init__(
        self,
        *,
        match_radius: float = 0.5,
        count_tolerance: int = 2,
        percentiles: tuple[int, ...] = PERCENTILES,
        interior: tuple[float, float] | None = None,
    ) -> None:
        self.match_radius = match_radius
        self.interior = interior
        self._inner = {"true": 0, "pred": 0, "within": 0, "pred_within": 0, "species": 0}
        self.count_tolerance = count_tolerance
        self.percentiles = tuple(percentiles)
        self._p2t: list[np.ndarray] = []
        self._t2p: list[np.ndarray] = []
        self._dz: list[np.ndarray] = []
        self._same_group: list[np.ndarray] = []
        self._mse: list[float] = []
        self.n_samples = 0
        self.n_true = 0
        self.n_pred = 0
        self.n_within = 0
        self.n_pred_within = 0
        self.n_count_exact = 0
        self.n_count_within = 0
        self.true_without_pred = 0
        self.pred_without_true = 0

    def add(
        self,
        pred_positions: np.ndarray,
        pred_numbers: np.ndarray,
        *,
        true_positions: np.ndarray,
        true_numbers: np.ndarray,
        voxel_mse: float | None = None,
    ) -> dict[str, Any]:
        """Score one sample and add it to the aggregate.

        Args:
            pred_positions: ``(n, 3)`` Å; pred_numbers: ``(n,)`` Z.
            true_positions: ``(m, 3)`` Å; true_numbers: ``(m,)`` Z.
            voxel_mse: the sample's voxel MSE (Å^-6), if known.

        Returns:
            The sample's own summary: atom counts, matched atoms, exact species.
        """
        pp = np.asarray(pred_positions, dtype=np.float64).reshape(-1, 3)
        tp = np.asarray(true_positions, dtype=np.float64).reshape(-1, 3)
        pz = np.asarray(pred_numbers, dtype=np.int64).reshape(-1)
        tz = np.asarray(true_numbers, dtype=np.int64).reshape(-1)
        if len(pp) != len(pz) or len(tp) != len(tz):
            raise ValueError("positions and numbers differ in length")
        self.n_samples += 1
        self.n_true += len(tp)
        self.n_pred += len(pp)
        if self.interior is not None:
            self._inner["true"] += int(self._inside(tp).sum())
            self._inner["pred"] += int(self._inside(pp).sum())
        diff = abs(len(pp) - len(tp))
        self.n_count_exact += diff == 0
        self.n_count_within += diff <= self.count_tolerance
        if voxel_mse is not None:
            self._mse.append(float(voxel_mse))
        n_matched = n_exact = 0
        if len(pp) and len(tp):
            d_p2t, _ = nearest_distances(pp, tp)
            d_t2p, idx = nearest_distances(tp, pp)
            self._p2t.append(d_p2t)
            self._t2p.append(d_t2p)
            self.n_pred_within += int((d_p2t <= self.match_radius).sum())
            matched = d_t2p <= self.match_radius
            n_matched = int(matched.sum())
            self.n_within += n_matched
            z_true, z_pred = tz[matched], pz[idx[matched]]
            self._dz.append(np.abs(z_true - z_pred))
            if self.interior is not None:
                inner_t, inner_p = self._inside(tp), self._inside(pp)
                self._inner["within"] += int((matched & inner_t).sum())
                self._inner["pred_within"] += int(((d_p2t <= self.match_radius) & inner_p).sum())
                self._inner["species"] += int((tz == pz[idx])[matched & inner_t].sum())
            groups = _group_table()
            self._same_group.append(groups[z_true] == groups[z_pred])
            n_exact = int((z_true == z_pred).sum())
        else:
            self.true_without_pred += len(tp)
            self.pred_without_true += len(pp)
        return {
            "n_true": len(tp),
            "n_pred": len(pp),
            "n_matched": n_matched,
            "n_species_exact": n_exact,
        }

    def _inside(self, positions: np.ndarray) -> np.ndarray:
        """``(n,)`` bool: the positions at least the interior margin from every face."""
        assert self.interior is not None
        side, margin = self.interior
        return np.all((positions >= margin) & (positions <= side - margin), axis=1)

    def _interior_result(self) -> dict[str, Any] | None:
        if self.interior is None:
            return None
        inner = self._inner
        return {
            "margin": self.interior[1],
            "n_true_atoms": inner["true"],
            "n_pred_atoms": inner["pred"],
            "true_within_radius": _frac(inner["within"], inner["true"]),
            "pred_within_radius": _frac(inner["pred_within"], inner["pred"]),
            "species_exact": _frac(inner["species"], inner["within"]),
        }

    def result(self) -> dict[str, Any]:
        """The aggregate scores as a JSON-ready dict (``None`` where undefined)."""
        dz = np.concatenate(self._dz) if self._dz else np.zeros(0, dtype=np.int64)
        same = np.concatenate(self._same_group) if self._same_group else np.zeros(0, dtype=bool)
        n_m = len(dz)
        hist = None
        if n_m:
            hist = {
                "0": _frac((dz == 0).sum(), n_m),
                "1": _frac((dz == 1).sum(), n_m),
                "2": _frac((dz == 2).sum(), n_m),
                ">=3": _frac((dz >= 3).sum(), n_m),
            }
        return {
            "n_samples": self.n_samples,
            "n_true_atoms": self.n_true,
            "n_pred_atoms": self.n_pred,
            "match_radius": self.match_radius,
            "count_tolerance": self.count_tolerance,
            "pred_to_true": percentiles(self._p2t, self.percentiles),
            "true_to_pred": percentiles(self._t2p, self.percentiles),
            "true_within_radius": _frac(self.n_within, self.n_true),
            "pred_within_radius": _frac(self.n_pred_within, self.n_pred),
            "count_exact": _frac(self.n_count_exact, self.n_samples),
            "count_within": _frac(self.n_count_within, self.n_samples),
            "n_matched": int(n_m),
            "species_exact": _frac((dz == 0).sum(), n_m),
            "dz_histogram": hist,
            "same_group": _frac(same.sum(), n_m),
            "voxel_mse": percentiles(np.asarray(self._mse), self.percentiles),
            "voxel_mse_mean": float(np.mean(self._mse)) if self._mse else None,
            "true_without_pred": self.true_without_pred,
            "pred_without_true": self.pred_without_true,
            "interior": self._interior_result(),
        }


def score_samples(
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], **kwargs: Any
) -> dict[str, Any]:
    """Score ``(pred_positions, pred_numbers, true_positions, true_numbers)`` tuples at once.

    Keyword arguments go to :class:`Scorer`.
    """
    scorer = Scorer(**kwargs)
    for pred_positions, pred_numbers, true_positions, true_numbers in samples:
        scorer.add(
            pred_positions, pred_numbers, true_positions=true_positions, true_numbers=true_numbers
        )
    return scorer.result()


def _fmt(value: Any, pct: bool = False, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if pct:
        return f"{100 * value:.1f}%"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"


def _summary_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """(row key, formatted value) of the summary table; blank where ``r`` lacks the score."""

    def cell(key: str, pct: bool = True) -> str:
        return _fmt(r[key], pct) if key in r else ""

    hist = r.get("dz_histogram")
    rows = [
        ("samples", cell("n_samples", False)),
        ("atoms", f"{r['n_true_atoms']} / {r['n_pred_atoms']}" if "n_true_atoms" in r else ""),
        ("within", cell("true_within_radius")),
        ("pred_within", cell("pred_within_radius")),
        ("count_exact", cell("count_exact")),
        ("count_within", cell("count_within")),
        ("species_exact", cell("species_exact")),
    ]
    for key in ("1", "2", ">=3"):
        value = "" if "dz_histogram" not in r else _fmt((hist or {}).get(key), True)
        rows.append((f"dz{key}", value))
    rows.append(("same_group", cell("same_group")))
    inner = r.get("interior") or {}
    for key in ("true_within_radius", "pred_within_radius"):
        rows.append((f"interior_{key}", _fmt(inner[key], True) if key in inner else ""))
    rows.append(("mse", cell("voxel_mse_mean", False)))
    return rows


def to_markdown(
    result: dict[str, Any],
    *,
    reference: dict[str, Any] | None = PAPER_SINGLE,
    title: str | None = None,
    others: list[tuple[str, dict[str, Any]]] | tuple[()] = (),
) -> str:
    """Markdown tables of a :meth:`Scorer.result`, beside a reference (the paper's single cells).

    A ``"ceiling"`` entry in ``result`` (the true species grids decoded, from
    :func:`crystalgrid.models.scoring.evaluate.evaluate`) gets its own column.

    Args:
        result: the aggregate scores.
        reference: scores to print beside them (same keys); ``None`` for none.
        title: an optional heading line.
        others: more ``(column name, result)`` pairs, printed before the reference.
    """
    r = result["match_radius"]
    t = result["count_tolerance"]
    labels = {
        "samples": "samples",
        "atoms": "true atoms / predicted atoms",
        "within": f"true atoms within {r} Å of a prediction",
        "pred_within": f"predicted atoms within {r} Å of a true atom",
        "count_exact": "samples with the exact atom count",
        "count_within": f"samples with the atom count within ±{t}",
        "species_exact": f"species exact (atoms matched within {r} Å)",
        "dz1": "species off by 1",
        "dz2": "species off by 2",
        "dz>=3": "species off by ≥ 3",
        "same_group": "species read in the true group (paper: a group network of its own)",
        "mse": "voxel MSE, mean (Å^-6)",
    }
    if result.get("interior"):
        m = result["interior"]["margin"]
        labels = {
            **{k: v for k, v in labels.items() if k != "mse"},
            "interior_true_within_radius": f"true atoms ≥ {m} Å from every face: within {r} Å",
            "interior_pred_within_radius": (
                f"predicted atoms ≥ {m} Å from every face: within {r} Å of a true atom"
            ),
            "mse": labels["mse"],
        }
    columns: list[tuple[str, dict[str, Any]]] = [("this model", result)]
    if result.get("ceiling"):
        columns.append(("decoding ceiling (true species grid)", result["ceiling"]))
    columns.extend(others)
    paper_heads = {id(PAPER_SINGLE): "paper (single cells)", id(PAPER_REPEATED): "paper (crops)"}
    ref_head = paper_heads.get(id(reference), "reference")
    if reference:
        columns.append((ref_head, reference))
    values = [dict(_summary_rows(col)) for _, col in columns]
    lines = [f"## {title}", ""] if title else []
    lines.append("| score | " + " | ".join(name for name, _ in columns) + " |")
    lines.append("|---" * (len(columns) + 1) + "|")
    for key, label in labels.items():
        lines.append(f"| {label} | " + " | ".join(v.get(key, "") for v in values) + " |")
    pcts = [str(p) for p in PERCENTILES]
    lines += ["", "| percentile | " + " | ".join(pcts) + " |", "|---" * (len(pcts) + 1) + "|"]
    series = [
        ("prediction → nearest true atom (Å)", result.get("pred_to_true")),
        ("true atom → nearest prediction (Å)", result.get("true_to_pred")),
    ]
    if reference and reference.get("pred_to_true"):
        series.append((f"{ref_head}: prediction → true (Å)", reference["pred_to_true"]))
    series.append(("voxel MSE per sample (Å^-6)", result.get("voxel_mse")))
    for name, row in series:
        row = row or {}
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(p)) for p in pcts) + " |")
    return "\n".join(lines) + "\n"
