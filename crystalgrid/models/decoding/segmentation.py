"""Back to atoms from a segmented grid (appendix D) or from the segmenter's class scores.

Two decodings, both without periodic wrapping (a 10 Å crop is not a period of the crystal):

- :func:`decode_atoms`, the paper's, from a segmented grid (one label per voxel): the
  non-background voxels are split into connected components (26-connectivity, cc3d, or
  ``scipy.ndimage.label`` when cc3d is missing); each component is one atom whose species is
  the majority vote of its voxels (a tie goes to the lower atomic number) and whose position
  is the unweighted centroid of its voxel centres, ``(i + 0.5) h`` in box Å.
- :func:`decode_class_scores`, from the segmenter's per-voxel class scores (logits): one atom
  per local maximum of the atom log-odds ``log P(atom) - log P(no atom)`` that is above
  ``threshold`` and the largest within ``window`` voxels; its position is the
  ``P(atom)``-weighted centroid of the 3x3x3 voxels around the maximum, its species the class
  with the largest summed probability there. Two touching atoms, one connected component,
  stay two atoms, and a weak atom that never wins the argmax is still found.

:func:`species_probabilities` gives, for atoms placed by any decoder, the segmenter's
probability of each atomic number around each atom (what
:class:`~crystalgrid.models.decoding.cell_species.CellSpecies` weighs with the amplitudes).

The atoms are positions in Å in the box frame and atomic numbers;
:mod:`~crystalgrid.models.decoding.structure` writes them as pymatgen objects or CIFs. This
module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crystalgrid.models.nets.classes import ClassMap
from crystalgrid.spec import GridSpec

__all__ = [
    "class_score_peaks",
    "decode_atoms",
    "decode_class_scores",
    "label_components",
    "species_probabilities",
]


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a boolean 3-D mask with 26-connectivity.

    Args:
        mask: ``(nx, ny, nz)`` bool.

    Returns:
        ``(labels, n)``: int labels ``(nx, ny, nz)``, 0 for background, 1..n for components.
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    try:
        import cc3d
    except ImportError:
        from scipy import ndimage

        labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        return labels, int(n)
    labels, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    return labels, int(n)


def decode_atoms(
    grid: np.ndarray,
    spec: GridSpec,
    *,
    classes: ClassMap | Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Atoms from a species grid or from a grid of class indices.

    Args:
        grid: ``(bins, bins, bins)`` integers; atomic numbers (0 = no atom) when ``classes``
            is ``None``, else class indices (0 = no atom) of ``classes``.
        spec: the grid's geometry (voxel size for positions).
        classes: the class map, or the atomic numbers of classes 1.. in order.

    Returns:
        ``(positions (n, 3) float64 Å in the box frame, numbers (n,) uint8)``, one atom per
        connected component, in the order of the components' first voxel (x, then y, then z).
    """
    grid = np.asarray(grid)
    if grid.shape != spec.shape:
        raise ValueError(f"grid shape {grid.shape} does not match the spec's {spec.shape}")
    if classes is not None:
        cmap = classes if isinstance(classes, ClassMap) else ClassMap(classes)
        species = cmap.to_species(grid)
    else:
        if grid.min(initial=0) < 0 or grid.max(initial=0) > 255:
            raise ValueError("a species grid holds atomic numbers in 0..255")
        species = grid.astype(np.uint8, copy=False)
    labels, n = label_components(species != 0)
    if n == 0:
        return np.zeros((0, 3), dtype=np.float64), np.zeros(0, dtype=np.uint8)
    # Renumber components by their first voxel in C order, so the output order is fixed
    # whichever labelling library ran.
    flat = labels.ravel()
    fg = np.flatnonzero(flat)
    lab = flat[fg]
    ids, first = np.unique(lab, return_index=True)
    n = len(ids)
    order = np.argsort(first, kind="stable")  # component ids sorted by first voxel
    rank = np.empty(int(ids[-1]) + 1, dtype=np.int64)
    rank[ids[order]] = np.arange(n)
    comp = rank[lab]

    ijk = np.stack(np.unravel_index(fg, grid.shape), axis=1).astype(np.float64)
    counts = np.bincount(comp, minlength=n).astype(np.float64)
    centroid = np.stack(
        [np.bincount(comp, weights=ijk[:, a], minlength=n) for a in range(3)], axis=1
    )
    positions = (centroid / counts[:, None] + 0.5) * spec.voxel

    # Majority vote: count (component, Z) pairs; the largest count wins, then the lower Z.
    z = species.ravel()[fg].astype(np.int64)
    votes = np.zeros((n, 256), dtype=np.int64)
    np.add.at(votes, (comp, z), 1)
    numbers = votes.argmax(axis=1).astype(np.uint8)  # argmax returns the first (lowest Z) max
    return positions, numbers


def decode_class_scores(
    logits: np.ndarray,
    spec: GridSpec,
    classes: ClassMap | Sequence[int],
    *,
    threshold: float = 0.0,
    window: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Atoms from a segmenter's class scores: peaks of the atom log-odds (module docstring).

    The atoms of :func:`class_score_peaks`, without their log-odds.
    """
    positions, numbers, _ = class_score_peaks(
        logits, spec, classes, threshold=threshold, window=window
    )
    return positions, numbers


def class_score_peaks(
    logits: np.ndarray,
    spec: GridSpec,
    classes: ClassMap | Sequence[int],
    *,
    threshold: float = 0.0,
    window: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`decode_class_scores` with each atom's peak log-odds.

    The atoms come by decreasing log-odds, and a peak is kept or suppressed by higher peaks
    only, so the atoms at a higher threshold are exactly the leading ones whose log-odds
    exceed it: one call at the lowest threshold serves every higher one.

    Args:
        logits: ``(n_classes, bins, bins, bins)`` unnormalised scores, class 0 "no atom".
        spec: the grid's geometry.
        classes: the class map (or the atomic numbers of classes 1.. in order).
        threshold: smallest atom log-odds of a peak (0: ``P(atom) >= 0.5`` at the peak).
        window: odd number of voxels; a peak is the largest within ``window`` voxels along
            each axis, so two atoms closer than ``window // 2 + 1`` voxels merge (5 at 30
            bins over 10 Å: 1 Å, below any real interatomic distance).

    Returns:
        ``(positions (n, 3) float64 box Å, numbers (n,) uint8, log-odds (n,) float64)``, by
        decreasing log-odds.
    """
    from scipy import ndimage

    cmap = classes if isinstance(classes, ClassMap) else ClassMap(classes)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape != (cmap.n_classes, *spec.shape):
        raise ValueError(
            f"logits of shape {logits.shape}, expected {(cmap.n_classes, *spec.shape)}"
        )
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of voxels, got {window}")
    top = logits.max(axis=0)
    prob = np.exp(logits - top)
    prob /= prob.sum(axis=0)
    atom_logit = _logsumexp(logits[1:]) - logits[0] if cmap.n_classes > 1 else -logits[0]
    local_max = ndimage.maximum_filter(atom_logit, size=window, mode="constant", cval=-np.inf)
    candidates = np.argwhere((atom_logit >= local_max) & (atom_logit > threshold))
    # Plateaus (equal scores) give several candidates: keep the first of each window.
    order = np.lexsort((*candidates.T[::-1], -atom_logit[tuple(candidates.T)]))
    half = window // 2
    kept: list[np.ndarray] = []
    for ijk in candidates[order]:
        if all(np.abs(ijk - other).max() > half for other in kept):
            kept.append(ijk)
    if not kept:
        return np.zeros((0, 3)), np.zeros(0, dtype=np.uint8), np.zeros(0)
    peaks = np.array(kept)
    # 3x3x3 neighbourhoods (zero outside the grid): P(atom)-weighted centroid, summed classes.
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    padded = np.pad(prob, ((0, 0), (1, 1), (1, 1), (1, 1)))
    idx = peaks[:, None, :] + offsets[None, :, :] + 1  # (k, 27, 3) into the padded grid
    near = padded[:, idx[..., 0], idx[..., 1], idx[..., 2]]  # (classes, k, 27)
    weight = 1.0 - near[0]
    inside = np.all((idx >= 1) & (idx <= spec.bins), axis=-1)
    weight = np.where(inside, weight, 0.0)
    centre = (weight[..., None] * (idx - 1)).sum(axis=1) / weight.sum(axis=1)[:, None]
    positions = (centre + 0.5) * spec.voxel
    cls = near[1:].sum(axis=2).argmax(axis=0) + 1
    return positions, cmap.z_of_class[cls], atom_logit[tuple(peaks.T)]


def species_probabilities(
    logits: np.ndarray,
    positions: np.ndarray,
    spec: GridSpec,
    classes: ClassMap | Sequence[int],
    *,
    max_z: int = 118,
) -> np.ndarray:
    """The segmenter's probability of each atomic number at each atom.

    The class probabilities (softmax of ``logits``) of the 3x3x3 voxels around the voxel
    holding each atom are summed over the atom classes and normalised, as
    :func:`class_score_peaks` names an atom's species.

    Args:
        logits: ``(n_classes, bins, bins, bins)`` unnormalised scores, class 0 "no atom".
        positions: ``(n, 3)`` box Å.
        spec: the grid's geometry.
        classes: the class map (or the atomic numbers of classes 1.. in order).
        max_z: columns of the result.

    Returns:
        ``(n, max_z)`` float64, column ``Z - 1`` the probability of element ``Z``; rows sum to 1.
    """
    cmap = classes if isinstance(classes, ClassMap) else ClassMap(classes)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape != (cmap.n_classes, *spec.shape):
        raise ValueError(
            f"logits of shape {logits.shape}, expected {(cmap.n_classes, *spec.shape)}"
        )
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    out = np.zeros((len(positions), max_z))
    if not len(positions) or cmap.n_classes < 2:
        return out
    voxel = np.clip(np.floor(positions / spec.voxel).astype(np.int64), 0, spec.bins - 1)
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    idx = np.clip(voxel[:, None, :] + offsets[None], 0, spec.bins - 1)  # (n, 27, 3)
    near = logits[:, idx[..., 0], idx[..., 1], idx[..., 2]]  # (classes, n, 27)
    near = np.exp(near - near.max(axis=0))
    near /= near.sum(axis=0)
    atom = near[1:].sum(axis=2)  # (atom classes, n)
    atom /= np.maximum(atom.sum(axis=0), 1e-300)
    z = cmap.z_of_class[1:].astype(np.int64)
    keep = z <= max_z
    np.add.at(out.T, z[keep] - 1, atom[keep])
    return out


def _logsumexp(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=0)
    return top + np.log(np.exp(a - top).sum(axis=0))
