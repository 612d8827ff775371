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

Atoms per sample (:func:`atom_counts`) and chemistry (:func:`charge_balance`: the share of
samples whose composition pymatgen can give integer oxidation states summing to zero, as
SMACT's charge balance does in CDVAE's composition validity) compare draws with real cells.
:func:`uniqueness_and_novelty` matches draws with each other and with training samples by
StructureMatcher, the box taken as the lattice.

Conditional generation (appendix G.1): :func:`conditional_check` reports how closely the
generated largest atomic number follows the requested one.

This module does not import torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from crystalgrid.contracts import iter_view
from crystalgrid.models.scoring.distances import min_distance, nearest_neighbour_distances
from crystalgrid.models.scoring.metrics import percentiles
from crystalgrid.validity import MIN_DISTANCE, MIN_VOLUME

__all__ = [
    "CHARGE_BALANCE_MAX_ELEMENTS",
    "CHARGE_BALANCE_MAX_SITES",
    "SPACING_EDGES",
    "atom_counts",
    "charge_balance",
    "conditional_check",
    "real_atom_sets",
    "real_atoms",
    "spacing_distribution",
    "structural_validity",
    "uniqueness_and_novelty",
]

#: Samples with more elements are not searched for a charge balance (pymatgen's search is
#: exponential in the elements).
CHARGE_BALANCE_MAX_ELEMENTS = 4
#: ... and so are samples whose reduced formula holds more sites.
CHARGE_BALANCE_MAX_SITES = 20

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
    return real_atoms(view, limit=limit, batch_size=batch_size)[0]


def real_atoms(
    view: Any, *, limit: int | None = 2000, batch_size: int = 256
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The ground-truth atoms of the first ``limit`` samples of a split: one ``(n_i, 3)``
    array of positions (box Å) and one ``(n_i,)`` array of atomic numbers per sample."""
    positions: list[np.ndarray] = []
    numbers: list[np.ndarray] = []
    for batch in iter_view(view, batch_size, fields=("atom_positions", "atom_numbers")):
        for pos, z in zip(batch["atom_positions"], batch["atom_numbers"], strict=True):
            if limit is not None and len(positions) >= limit:
                return positions, numbers
            positions.append(np.asarray(pos, dtype=np.float64).reshape(-1, 3))
            numbers.append(np.asarray(z, dtype=np.uint8).reshape(-1))
    return positions, numbers


def atom_counts(atom_sets: Sequence[np.ndarray]) -> dict[str, Any]:
    """Atoms per sample: ``mean`` and ``percentiles`` (0..100 by 10) of the counts, and
    ``n_samples``."""
    counts = np.array([len(np.asarray(p).reshape(-1, 3)) for p in atom_sets], dtype=np.float64)
    return {
        "n_samples": len(counts),
        "mean": float(counts.mean()) if len(counts) else None,
        "percentiles": percentiles(counts),
    }


def charge_balance(
    numbers: Sequence[np.ndarray], *, max_elements: int = CHARGE_BALANCE_MAX_ELEMENTS
) -> dict[str, Any]:
    """The share of samples whose composition can be charge-balanced: pymatgen finds at
    least one assignment of common oxidation states summing to zero
    (``Composition.oxi_state_guesses``). A sample of one element counts as balanced (an
    element, oxidation state 0); a sample with no atom does not. pymatgen's search grows
    exponentially with the elements and the sites, so a sample of more than ``max_elements``
    elements, or whose reduced formula holds more than :data:`CHARGE_BALANCE_MAX_SITES`
    sites, is not searched: it counts as not balanced and in ``n_not_searched``.

    Returns:
        ``fraction`` (``None`` for no sample), ``n_samples``, ``n_balanced``,
        ``n_not_searched``, ``definition``.
    """
    from pymatgen.core import Composition, Element

    seen: dict[str, bool] = {}
    balanced = not_searched = 0
    for z in numbers:
        z = np.asarray(z).reshape(-1)
        z = z[z > 0]
        if not len(z):
            continue
        elements, counts = np.unique(z, return_counts=True)
        if len(elements) > max_elements or int(counts.sum()) > 4 * CHARGE_BALANCE_MAX_SITES:
            not_searched += 1
            continue
        key = " ".join(f"{e}:{c}" for e, c in zip(elements, counts, strict=True))
        if key not in seen:
            comp = Composition(
                {Element.from_Z(int(e)): int(c) for e, c in zip(elements, counts, strict=True)}
            )
            with warnings.catch_warnings():
                # pymatgen warns once per element without a Pauling electronegativity (noble
                # gases, the heaviest elements) while it orders them; the verdict is unchanged.
                warnings.filterwarnings("ignore", "No Pauling electronegativity", UserWarning)
                reduced = comp.reduced_composition
                if reduced.num_atoms > CHARGE_BALANCE_MAX_SITES:
                    seen[key] = False
                    not_searched += 1
                else:
                    seen[key] = len(elements) == 1 or bool(reduced.oxi_state_guesses())
        balanced += seen[key]
    n = len(numbers)
    return {
        "fraction": balanced / n if n else None,
        "n_samples": n,
        "n_balanced": balanced,
        "n_not_searched": not_searched,
        "definition": "pymatgen Composition.oxi_state_guesses finds a neutral assignment "
        f"(one element: balanced; no atom, or more than {max_elements} elements or "
        f"{CHARGE_BALANCE_MAX_SITES} sites in the reduced formula: not searched, not balanced)",
    }


def uniqueness_and_novelty(
    positions: Sequence[np.ndarray],
    numbers: Sequence[np.ndarray],
    training: tuple[Sequence[np.ndarray], Sequence[np.ndarray]],
    *,
    side: float,
) -> dict[str, Any]:
    """Uniqueness (draws unlike every other draw) and novelty (draws unlike every training
    sample) by CDVAE's StructureMatcher, each atom set taken as a Structure whose lattice is
    the cubic box of ``side`` Å. Only sets with the same reduced formula are compared.

    Args:
        positions, numbers: the draws' atoms (box Å, atomic numbers).
        training: the training samples' ``(positions, numbers)``.
        side: the box's side, Å.

    Returns:
        ``uniqueness`` (distinct structures / non-empty draws), ``novelty`` (draws matching no
        training sample / non-empty draws), ``n_samples``, ``n_distinct``, ``n_novel``,
        ``definition``.
    """
    from pymatgen.core import Lattice, Structure

    from crystalgrid.models.scoring.matching import cdvae_matcher

    lattice = Lattice.cubic(side)

    def structures(
        pos: Sequence[np.ndarray], num: Sequence[np.ndarray]
    ) -> dict[str, list[Structure]]:
        by_formula: dict[str, list[Structure]] = {}
        for p, z in zip(pos, num, strict=True):
            z = np.asarray(z).reshape(-1)
            if not len(z):
                continue
            species: list[Any] = [int(e) for e in z]  # pymatgen takes Z; its hints do not say so
            s = Structure(lattice, species, np.asarray(p).reshape(-1, 3), coords_are_cartesian=True)
            with warnings.catch_warnings():  # as in charge_balance
                warnings.filterwarnings("ignore", "No Pauling electronegativity", UserWarning)
                formula = s.composition.reduced_formula
            by_formula.setdefault(formula, []).append(s)
        return by_formula

    matcher = cdvae_matcher()
    draws = structures(positions, numbers)
    train = structures(*training)
    n = sum(len(v) for v in draws.values())
    distinct = novel = 0
    for formula, group in draws.items():
        distinct += len(matcher.group_structures(group))
        for s in group:
            novel += not any(matcher.fit(s, t) for t in train.get(formula, []))
    return {
        "uniqueness": distinct / n if n else None,
        "novelty": novel / n if n else None,
        "n_samples": n,
        "n_distinct": distinct,
        "n_novel": novel,
        "definition": "CDVAE's StructureMatcher, the box as the lattice; only samples of the "
        "same reduced formula compared; draws with no atom left out",
    }


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
