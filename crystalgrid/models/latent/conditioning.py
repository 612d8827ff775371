"""The conditional model's condition: what ``c`` to ask for a largest atomic number (appendix G.1).

The conditional VAE multiplies the bottleneck's input and output by the sample's largest
scaled density ``c`` (see :meth:`~crystalgrid.models.nets.model.ReferenceModel.condition`). The
density at an atom is proportional to its atomic number, so ``c`` stands for the largest
atomic number present. :func:`condition_calibration` measures, on the training split, which
``c`` goes with which largest Z (the trainer stores it in conditional checkpoints'
metadata); :func:`condition_for_z` reads it back to request a Z.

This module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crystalgrid.contracts import iter_view
from crystalgrid.errors import BadInputError
from crystalgrid.spec import GridSpec

__all__ = ["condition_calibration", "condition_for_z"]


def condition_calibration(
    view: Any, *, density_scale: float = 1.0, limit: int | None = 4096, batch_size: int = 256
) -> dict[str, Any]:
    """How the conditional VAE's ``c`` (largest scaled density) relates to the largest atomic
    number present, measured on a split's grids.

    For each sample: the largest atomic number in its species grid and the largest value of
    ``density * density_scale``. Per atomic number the median ``c`` is kept; a least-squares
    line ``c = slope * Z + intercept`` over all samples covers atomic numbers never seen as
    a sample's largest.

    Args:
        view: a split yielding ``density`` and ``species`` batches (the training split).
        density_scale: the model's density scale.
        limit: read at most this many samples (store order).
        batch_size: samples per read.

    Returns:
        JSON-ready ``{"z": [...], "median": [...], "count": [...], "slope", "intercept",
        "samples", "density_scale"}`` (``c`` in scaled units).

    Raises:
        BadInputError: if the split has no sample with an atom.
    """
    zmax: list[np.ndarray] = []
    cmax: list[np.ndarray] = []
    seen = 0
    for batch in iter_view(view, batch_size, fields=("density", "species")):
        species = np.asarray(batch["species"])
        density = np.asarray(batch["density"], dtype=np.float32)
        if limit is not None:
            species, density = species[: limit - seen], density[: limit - seen]
        b = len(species)
        zmax.append(species.reshape(b, -1).max(axis=1).astype(np.int64))
        cmax.append(density.reshape(b, -1).max(axis=1).astype(np.float64) * density_scale)
        seen += b
        if limit is not None and seen >= limit:
            break
    z = np.concatenate(zmax) if zmax else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cmax) if cmax else np.zeros(0)
    keep = z > 0
    z, c = z[keep], c[keep]
    if z.size == 0:
        raise BadInputError("no sample with an atom to calibrate the condition on")
    values = np.unique(z)
    medians = [float(np.median(c[z == v])) for v in values]
    counts = [int((z == v).sum()) for v in values]
    if len(values) >= 2:
        slope, intercept = np.polyfit(z.astype(np.float64), c, 1)
    else:  # one atomic number only: a line through the origin
        slope, intercept = float(np.median(c)) / float(values[0]), 0.0
    return {
        "z": [int(v) for v in values],
        "median": medians,
        "count": counts,
        "slope": float(slope),
        "intercept": float(intercept),
        "samples": int(z.size),
        "density_scale": float(density_scale),
    }


def condition_for_z(
    z: int | Sequence[int],
    calibration: dict[str, Any] | None,
    *,
    spec: GridSpec | None = None,
    density_scale: float = 1.0,
) -> np.ndarray:
    """The condition ``c`` (largest scaled density) to request a largest atomic number ``z``.

    With a calibration (:func:`condition_calibration`): the median ``c`` of the training
    samples whose largest atomic number is ``z``, or the fitted line for a ``z`` never seen.
    Without one: the peak of an isolated atom, ``z * density_scale / (sigma^3 (2 pi)^1.5)``
    (``spec`` gives sigma), which is below what real crystals show (neighbours add to it).

    Returns:
        ``(k,)`` float32, one ``c`` per requested atomic number.

    Raises:
        BadInputError: an atomic number outside 1..118.
    """
    zs = np.atleast_1d(np.asarray(z, dtype=np.int64))
    if np.any(zs < 1) or np.any(zs > 118):
        raise BadInputError(f"a condition is an atomic number in 1..118, got {zs.tolist()}")
    if calibration is None:
        norm = (spec or GridSpec()).norm
        return (zs * norm * density_scale).astype(np.float32)
    table = dict(zip(calibration["z"], calibration["median"], strict=True))
    line = calibration["slope"] * zs + calibration["intercept"]
    out = np.array([table.get(int(v), float(x)) for v, x in zip(zs, line, strict=True)])
    return np.maximum(out, 1e-6).astype(np.float32)
