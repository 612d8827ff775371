"""Score another model's output on a store's split, with crystalgrid's scorers.

A predictions file is a NumPy ``.npz`` with an ``index`` array, the *store* sample indices
predicted (the ``index`` field of every sample and batch of a split), and one of:

- ``species`` ``(n, bins, bins, bins)`` integer atomic numbers per voxel (0: no atom): decoded
  into atoms as the reference model's segmentation is (connected components, majority vote);
- ``density`` ``(n, bins, bins, bins)`` Å^-3 alone: decoded with the training-free peak fit
  (:func:`crystalgrid.models.decoding.peakfit.fit_atoms`);
- ``positions`` ``(m, 3)`` box Å, ``numbers`` ``(m,)`` atomic numbers and ``counts`` ``(n,)``
  atoms per sample (sample ``k`` owns the ``counts[k]`` rows after those of samples ``< k``).

With ``species`` (or atoms), a ``density`` array may come too; it then adds the voxel MSE.
Every index must belong to the split, and every sample of the split must be predicted (use
``limit`` to score the first samples only). On a ``single`` store the StructureMatcher rate
(CDVAE's settings, the lattice given: :mod:`crystalgrid.models.scoring.matching`) is added.

Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crystalgrid.contracts import iter_view
from crystalgrid.errors import BadInputError, NotFoundError
from crystalgrid.models.decoding.segmentation import decode_atoms
from crystalgrid.models.scoring.metrics import Scorer

__all__ = ["load_predictions", "score_predictions", "write_truth_predictions"]


def load_predictions(path: str | Path, bins: int) -> dict[str, np.ndarray]:
    """Read and check a predictions file (module docstring).

    Raises:
        NotFoundError: for a missing file.
        BadInputError: for an unreadable file, or arrays that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"predictions file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BadInputError(f"{path} is not a readable .npz file: {exc}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise BadInputError(f"{path} is a single array, not an .npz file of named arrays")
    with loaded as npz:
        arrays = {k: npz[k] for k in npz.files}
    if "index" not in arrays:
        raise BadInputError(f"{path} has no 'index' array (the store sample indices)")
    index = arrays["index"]
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise BadInputError(f"{path}: 'index' must be a 1-D integer array")
    n = len(index)
    if len(np.unique(index)) != n:
        raise BadInputError(f"{path}: 'index' holds a sample more than once")
    grid_shape = (n, bins, bins, bins)
    for name in ("species", "density"):
        if name in arrays and arrays[name].shape != grid_shape:
            raise BadInputError(
                f"{path}: '{name}' has shape {arrays[name].shape}, expected {grid_shape}"
            )
    has_atoms = {"positions", "numbers", "counts"} <= set(arrays)
    if not has_atoms and not ({"species", "density"} & set(arrays)):
        raise BadInputError(
            f"{path} holds neither grids ('species' or 'density') nor atoms "
            "('positions', 'numbers', 'counts')"
        )
    if has_atoms:
        pos, num, counts = arrays["positions"], arrays["numbers"], arrays["counts"]
        if pos.ndim != 2 or pos.shape[1] != 3 or len(num) != len(pos):
            raise BadInputError(f"{path}: 'positions' must be (m, 3) beside 'numbers' (m,)")
        if counts.shape != (n,) or counts.min(initial=0) < 0 or counts.sum() != len(pos):
            raise BadInputError(
                f"{path}: 'counts' must give each of the {n} samples' atoms, summing to {len(pos)}"
            )
        if not np.all(np.isfinite(pos)):
            raise BadInputError(f"{path}: 'positions' holds NaN or infinite values")
    if "density" in arrays and not np.all(np.isfinite(arrays["density"])):
        raise BadInputError(f"{path}: 'density' holds NaN or infinite values")
    return arrays


def _predicted_atoms(
    arrays: dict[str, np.ndarray], k: int, spec: Any, offsets: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    if offsets is not None:
        a, b = offsets[k], offsets[k + 1]
        return arrays["positions"][a:b], arrays["numbers"][a:b]
    if "species" in arrays:
        return decode_atoms(arrays["species"][k], spec)
    from crystalgrid.models.decoding.peakfit import fit_atoms

    return fit_atoms(arrays["density"][k], spec)


def score_predictions(
    predictions: str | Path | dict[str, np.ndarray],
    view: Any,
    *,
    limit: int | None = None,
    match_radius: float = 0.5,
    matching: bool = True,
    quiet: bool = True,
) -> dict[str, Any]:
    """The paper's scores (and the StructureMatcher rate on single cells) of predictions.

    Args:
        predictions: a predictions file (module docstring) or its arrays.
        view: the split predicted (``open_dataset(store).split(name)``).
        limit: score only the first ``limit`` samples of the split.
        match_radius: Å, for the matched-atom scores.
        matching: add the StructureMatcher scores on ``single`` stores.
        quiet: no progress bar.

    Returns:
        :meth:`Scorer.result`, with ``"structure_matcher"`` on single stores and
        ``"predictions"`` (what was read and how it was decoded).

    Raises:
        NotFoundError: for a missing file.
        BadInputError: for a file that does not fit the split.
    """
    from tqdm.auto import tqdm

    spec = view.spec
    arrays = (
        predictions if isinstance(predictions, dict) else load_predictions(predictions, spec.bins)
    )
    wanted = len(view) if limit is None else min(limit, len(view))
    index = np.asarray(arrays["index"], dtype=np.int64)
    row_of = {int(i): k for k, i in enumerate(index)}
    offsets = None
    if {"positions", "numbers", "counts"} <= set(arrays):
        offsets = np.concatenate([[0], np.cumsum(arrays["counts"])])
        kind = "atoms"
    elif "species" in arrays:
        kind = "species grids"
    else:
        kind = "density grids (peak fit)"
    representation = getattr(view.dataset, "representation", None)
    matcher = crystals = None
    structures: dict[int, Any] = {}
    if matching and representation == "single":
        from crystalgrid.models.scoring.matching import MatchScorer, crystal_indices

        matcher = MatchScorer()
        crystals = crystal_indices(view)
    scorer = Scorer(match_radius=match_radius)
    seen = 0
    with tqdm(total=wanted, desc="score", disable=quiet, leave=False) as bar:
        for batch in iter_view(view, 64, limit=wanted):
            for j, sample_index in enumerate(np.asarray(batch["index"])):
                k = row_of.get(int(sample_index))
                if k is None:
                    raise BadInputError(
                        f"sample {int(sample_index)} of the split has no prediction "
                        "(predict every sample, or score the first ones with limit)"
                    )
                pos, z = _predicted_atoms(arrays, k, spec, offsets)
                mse = None
                if "density" in arrays:
                    diff = np.asarray(arrays["density"][k], np.float64) - batch["density"][j]
                    mse = float(np.mean(diff**2))
                scorer.add(
                    pos,
                    z,
                    true_positions=batch["atom_positions"][j],
                    true_numbers=batch["atom_numbers"][j],
                    voxel_mse=mse,
                )
                if matcher is not None and crystals is not None:
                    c = int(crystals[int(sample_index)])
                    if c not in structures:
                        structures[c] = view.dataset.structure(c)
                    matcher.add(
                        pos,
                        z,
                        transform=np.asarray(batch["transform"][j]),
                        true_structure=structures[c],
                        complete=int(batch["n_outside"][j]) == 0,
                    )
                seen += 1
                bar.update(1)
    result = scorer.result()
    if matcher is not None:
        result["structure_matcher"] = matcher.result()
    split_indices = set(range(view.start, view.start + len(view)))
    outside = sorted(set(row_of) - split_indices)
    result["predictions"] = {
        "kind": kind,
        "samples_scored": seen,
        "outside_split": len(outside),
    }
    return result


def write_truth_predictions(path: str | Path, view: Any) -> Path:
    """Write a split's ground-truth atoms as a predictions file (atoms form).

    Scoring it gives 100% on every score: a check of the format and of the scorer.
    """
    index, positions, numbers, counts = [], [], [], []
    for batch in iter_view(view, 64):
        for j, sample_index in enumerate(np.asarray(batch["index"])):
            index.append(int(sample_index))
            positions.append(np.asarray(batch["atom_positions"][j], np.float64).reshape(-1, 3))
            numbers.append(np.asarray(batch["atom_numbers"][j], np.uint8))
            counts.append(len(numbers[-1]))
    path = Path(path)
    np.savez_compressed(
        path,
        index=np.asarray(index, dtype=np.int64),
        positions=np.concatenate(positions) if positions else np.zeros((0, 3)),
        numbers=np.concatenate(numbers) if numbers else np.zeros(0, np.uint8),
        counts=np.asarray(counts, dtype=np.int64),
    )
    return path
