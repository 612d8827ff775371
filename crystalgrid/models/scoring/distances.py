"""Distances between atoms in a box, without periodic images (numpy only).

A decoded sample is a box of atoms, not a crystal with a lattice: every distance here is the
plain Euclidean distance in Å between positions in the box frame.
"""

from __future__ import annotations

import numpy as np

__all__ = ["min_distance", "nearest_neighbour_distances"]


def nearest_neighbour_distances(positions: np.ndarray) -> np.ndarray:
    """For each atom, the distance to the nearest other atom of the same set (no periodicity).

    Args:
        positions: ``(n, 3)`` Å.

    Returns:
        ``(n,)`` Å; empty when ``n < 2`` (an atom alone has no neighbour).
    """
    p = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(p) < 2:
        return np.zeros(0, dtype=np.float64)
    d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(d2, np.inf)
    return np.sqrt(d2.min(axis=1))


def min_distance(positions: np.ndarray) -> float | None:
    """The smallest distance between two atoms of a set (Å); ``None`` for fewer than 2 atoms."""
    d = nearest_neighbour_distances(positions)
    return float(d.min()) if d.size else None
