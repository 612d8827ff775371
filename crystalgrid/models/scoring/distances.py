"""Distances between atoms in a box, without periodic images (numpy only).

A decoded sample is a box of atoms, not a crystal with a lattice: every distance here is the
plain Euclidean distance in Å between positions in the box frame.
"""

from __future__ import annotations

import numpy as np

__all__ = ["min_distance", "nearest_distances", "nearest_neighbour_distances"]


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n, m)`` squared distances, Å^2, between points ``a`` ``(n, 3)`` and ``b`` ``(m, 3)``."""
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)


def nearest_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point of ``a`` the distance to, and the index of, the nearest point of ``b``.

    Args:
        a: ``(n, 3)`` Å.
        b: ``(m, 3)`` Å, ``m >= 1``.

    Returns:
        ``(distances (n,) Å, indices (n,))``.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 3)
    if len(b) == 0:
        raise ValueError("nearest_distances needs at least one point in b")
    d2 = _squared_distances(a, b)
    idx = d2.argmin(axis=1) if len(a) else np.zeros(0, dtype=np.int64)
    return np.sqrt(d2[np.arange(len(a)), idx]), idx


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
    d2 = _squared_distances(p, p)
    np.fill_diagonal(d2, np.inf)
    return np.sqrt(d2.min(axis=1))


def min_distance(positions: np.ndarray) -> float | None:
    """The smallest distance between two atoms of a set (Å); ``None`` for fewer than 2 atoms."""
    d = nearest_neighbour_distances(positions)
    return float(d.min()) if d.size else None
