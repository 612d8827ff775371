"""Scores of generated samples: nearest-neighbour spacing, structural validity, and how a
conditional model follows its condition (paper section 4, Fig. 5A, Fig. S10A).

Spacing (Fig. 5A). For every atom of a sample with at least two atoms, the distance to the
nearest *other* atom of the same sample, in the box, without periodic images: a decoded
sample is a box of atoms, not a crystal with a lattice. The real reference is computed the
same way on the store's ground-truth atoms (:func:`real_atom_sets`), so both sides are the
same kind of object.

Validity (CDVAE, Xie et al. 2022): a structure is valid when no two atoms are closer than
0.5 Å and, where it has a volume (a lattice), the volume is above 0.1 Å^3. A box of decoded
atoms has no lattice, so only the distance test applies; a sample with no atom at all is
counted invalid (there is no structure) and reported as ``n_empty``; one atom is valid.

Conditional generation (appendix G.1): :func:`conditional_check` reports how closely the
generated largest atomic number follows the requested one.

This module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crystalgrid.contracts import iter_view
from crystalgrid.models.scoring.distances import min_distance, nearest_neighbour_distances
from crystalgrid.models.scoring.metrics import percentiles
from crystalgrid.validity import MIN_DISTANCE, MIN_VOLUME

__all__ = [
    "SPACING_EDGES",
    "conditional_check",
    "real_atom_sets",
    "spacing_distribution",
    "structural_validity",
]

#: Default histogram edges of the spacing distribution, Å (0 to 6 Å by 0.1 Å).
SPACING_EDGES: tuple[float, ...] = tuple(round(0.1 * i, 10) for i in range(61))


def spacing_distribution(
    atom_sets: Sequence[np.ndarray], *, edges: Sequence[float] = SPACING_EDGES
) -> dict[str, Any]:
    """The nearest-neighbour spacing distribution of many atom sets (the paper's Fig. 5A).

    Args:
        atom_sets: one ``(n_i, 3)`` array of positions (Å) per sample.
        edges: histogram bin edges, Å, ascending. Bins are ``[e_k, e_{k+1})`` except the
            last, which includes its right edge (numpy's convention); spacings beyond the
            last edge are counted in ``overflow``.

    Returns:
        A JSON-ready dict: ``edges``, ``counts`` (per bin), ``fraction`` (counts over all
        spacings, overflow included, so the fractions and ``overflow_fraction`` sum to 1),
        ``overflow``, ``n_spacings`` (atoms with a neighbour), ``n_samples``,
        ``n_samples_with_pairs``, ``mean`` and ``percentiles`` (0..100 by 10; ``None`` when
        there is no spacing at all).
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or len(e) < 2 or np.any(np.diff(e) <= 0):
        raise ValueError("edges must be at least two ascending values")
    per_sample = [nearest_neighbour_distances(p) for p in atom_sets]
    d = np.concatenate(per_sample) if per_sample else np.zeros(0)
    counts, _ = np.histogram(d, bins=e)
    overflow = int((d > e[-1]).sum())
    n = int(d.size)
    return {
        "edges": [float(x) for x in e],
        "counts": [int(c) for c in counts],
        "fraction": [float(c) / n if n else 0.0 for c in counts],
        "overflow": overflow,
        "overflow_fraction": overflow / n if n else 0.0,
        "n_spacings": n,
        "n_samples": len(per_sample),
        "n_samples_with_pairs": int(sum(x.size > 0 for x in per_sample)),
        "mean": float(d.mean()) if n else None,
        "percentiles": percentiles(d),
    }


def structural_validity(
    atom_sets: Sequence[np.ndarray],
    *,
    volumes: Sequence[float | None] | None = None,
    min_dist: float = MIN_DISTANCE,
    min_volume: float = MIN_VOLUME,
) -> dict[str, Any]:
    """CDVAE's structural validity of many atom sets.

    A set is valid when it has at least one atom, no two of its atoms are closer than
    ``min_dist`` (a distance of exactly ``min_dist`` passes) and, where a volume is given,
    the volume is above ``min_volume``.

    Args:
        atom_sets: one ``(n_i, 3)`` array of positions (Å) per sample.
        volumes: Å^3 per sample, or ``None`` entries (no lattice: the test is skipped).
        min_dist: Å. min_volume: Å^3.

    Returns:
        ``fraction`` valid (``None`` for no sample), ``n_samples``, ``n_valid``, ``n_empty``,
        ``n_too_close``, ``n_small_volume``, ``valid`` (one bool per sample), ``min_distance``
        (per sample, Å, ``None`` below two atoms) and ``definition``.
    """
    if volumes is not None and len(volumes) != len(atom_sets):
        raise ValueError("volumes must have one entry per atom set")
    valid: list[bool] = []
    mins: list[float | None] = []
    n_empty = n_close = n_volume = 0
    for i, pos in enumerate(atom_sets):
        p = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
        m = min_distance(p)
        mins.append(m)
        ok = True
        if len(p) == 0:
            n_empty += 1
            ok = False
        if m is not None and m < min_dist:
            n_close += 1
            ok = False
        vol = None if volumes is None else volumes[i]
        if vol is not None and not vol > min_volume:
            n_volume += 1
            ok = False
        valid.append(ok)
    n = len(valid)
    return {
        "fraction": sum(valid) / n if n else None,
        "n_samples": n,
        "n_valid": int(sum(valid)),
        "n_empty": n_empty,
        "n_too_close": n_close,
        "n_small_volume": n_volume,
        "valid": valid,
        "min_distance": mins,
        "definition": (
            f"CDVAE structural validity: at least one atom, no two atoms closer than {min_dist} Å"
            + (
                f", volume > {min_volume} Å^3"
                if volumes is not None
                else " (no lattice: the volume test does not apply)"
            )
        ),
    }


def real_atom_sets(
    view: Any, *, limit: int | None = 2000, batch_size: int = 256
) -> list[np.ndarray]:
    """The ground-truth atom positions (box Å) of the first ``limit`` samples of a split.

    Returns:
        One ``(n_i, 3)`` array per sample.
    """
    out: list[np.ndarray] = []
    for batch in iter_view(view, batch_size, fields=("atom_positions", "atom_numbers")):
        for pos in batch["atom_positions"]:
            if limit is not None and len(out) >= limit:
                return out
            out.append(np.asarray(pos, dtype=np.float64).reshape(-1, 3))
    return out


def conditional_check(
    requested_z: Sequence[int],
    numbers: Sequence[np.ndarray],
    *,
    within: int = 2,
    requested_c: Sequence[float] | None = None,
    max_density: Sequence[float] | None = None,
) -> dict[str, Any]:
    """How closely the generated largest atomic number follows the requested one (Fig. S10A).

    Args:
        requested_z: the atomic number asked for, one per sample.
        numbers: the decoded atomic numbers of each sample.
        within: the tolerance of ``fraction_within`` (|generated - requested| <= within).
        requested_c, max_density: optionally the condition fed (scaled) and each sample's
            generated largest scaled density, for their correlation.

    Returns:
        JSON-ready: ``n_samples``, ``n_empty`` (no atom decoded: no largest Z), over the
        others ``pearson_r`` (``None`` with fewer than 2 distinct requests or no spread),
        ``fraction_exact``, ``fraction_within``, ``mean_abs_dz``, ``per_request``
        (requested Z -> n, mean and median generated largest Z, fraction exact), and
        ``density_pearson_r`` when the densities are given.
    """
    req = np.asarray(requested_z, dtype=np.int64)
    if len(req) != len(numbers):
        raise ValueError("one requested atomic number per sample")
    gen = np.array([int(np.max(n)) if len(n) else 0 for n in numbers], dtype=np.int64)
    ok = gen > 0
    r, g = req[ok], gen[ok]

    def corr(a: np.ndarray, b: np.ndarray) -> float | None:
        if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
            return None
        return float(np.corrcoef(a.astype(float), b.astype(float))[0, 1])

    per: dict[str, Any] = {}
    for v in np.unique(req):
        sel = ok & (req == v)
        gv = gen[sel]
        per[str(int(v))] = {
            "n": int((req == v).sum()),
            "n_empty": int(((req == v) & ~ok).sum()),
            "mean": float(gv.mean()) if gv.size else None,
            "median": float(np.median(gv)) if gv.size else None,
            "fraction_exact": float((gv == v).mean()) if gv.size else None,
        }
    out: dict[str, Any] = {
        "n_samples": len(req),
        "n_empty": int((~ok).sum()),
        "within": int(within),
        "pearson_r": corr(r, g),
        "fraction_exact": float((r == g).mean()) if r.size else None,
        "fraction_within": float((np.abs(r - g) <= within).mean()) if r.size else None,
        "mean_abs_dz": float(np.abs(r - g).mean()) if r.size else None,
        "per_request": per,
    }
    if requested_c is not None and max_density is not None:
        out["density_pearson_r"] = corr(np.asarray(requested_c), np.asarray(max_density))
    return out
