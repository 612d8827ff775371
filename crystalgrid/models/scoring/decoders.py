"""The decoders scored alone, on a split's true grids: what decoding reaches without a model.

- :func:`score_species_grids`: the true species grids decoded into atoms (connected
  components, majority vote): the ceiling of any segmentation. The species grid labels only
  the atoms inside the box, so the ceiling is close to, not exactly, 100% (the measured
  figures are in docs/models.md).
- :func:`score_peak_fit`: the training-free peak fit
  (:func:`~crystalgrid.models.decoding.peakfit.fit_atoms`) of the true densities.

Both report :meth:`~crystalgrid.models.scoring.metrics.Scorer.result`. This module does not
import torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crystalgrid.contracts import ViewLike, iter_view
from crystalgrid.errors import BadInputError
from crystalgrid.models.decoding.peakfit import fit_atoms
from crystalgrid.models.decoding.segmentation import decode_atoms
from crystalgrid.models.scoring.metrics import Scorer
from crystalgrid.spec import GridSpec

__all__ = ["score_peak_fit", "score_species_grids"]


def score_species_grids(
    view: ViewLike,
    spec: GridSpec | None = None,
    *,
    batch_size: int = 256,
    limit: int | None = None,
    match_radius: float = 0.5,
) -> dict[str, Any]:
    """Scores of decoding the *true* species grids (no model): the decoding step's ceiling.

    Returns:
        :meth:`Scorer.result` (the voxel MSE is not defined here and is ``None``).

    Raises:
        BadInputError: no ``spec`` given, and the view has none.
    """
    spec = spec or getattr(view, "spec", None)
    if not isinstance(spec, GridSpec):
        raise BadInputError("pass spec=GridSpec(...): the view has no .spec")
    scorer = Scorer(match_radius=match_radius)
    for batch in iter_view(view, batch_size, limit=limit):
        for i, grid in enumerate(np.asarray(batch["species"])):
            pos, z = decode_atoms(grid, spec)
            scorer.add(
                pos,
                z,
                true_positions=batch["atom_positions"][i],
                true_numbers=batch["atom_numbers"][i],
            )
    return scorer.result()


def score_peak_fit(
    view: Any,
    spec: GridSpec | None = None,
    *,
    limit: int | None = None,
    batch_size: int = 64,
    match_radius: float = 0.5,
    quiet: bool = True,
    **fit: Any,
) -> dict[str, Any]:
    """The paper's scores of :func:`fit_atoms` on the true densities of a split (no model).

    Args:
        view: a split (``iter_batches`` yielding ``density``, ``atom_positions``,
            ``atom_numbers``).
        spec: the grid geometry; default ``view.spec``.
        limit: score the first ``limit`` samples.
        batch_size: samples read at a time.
        match_radius: Å, as in :class:`~crystalgrid.models.scoring.metrics.Scorer`.
        quiet: no progress bar.
        **fit: keyword arguments of :func:`fit_atoms`.

    Returns:
        :meth:`Scorer.result` plus ``"decoder"``: the settings used.
    """
    from tqdm.auto import tqdm

    spec = spec or view.spec
    scorer = Scorer(match_radius=match_radius)
    total = len(view) if limit is None else min(limit, len(view))
    with tqdm(total=total, desc="peak fit", disable=quiet, leave=False) as bar:
        for batch in iter_view(view, batch_size, limit=limit):
            for i, grid in enumerate(np.asarray(batch["density"])):
                pos, z = fit_atoms(grid, spec, **fit)
                scorer.add(
                    pos,
                    z,
                    true_positions=batch["atom_positions"][i],
                    true_numbers=batch["atom_numbers"][i],
                )
            bar.update(len(batch["density"]))
    result = scorer.result()
    result["decoder"] = {"name": "peak-fit", **fit}
    return result
