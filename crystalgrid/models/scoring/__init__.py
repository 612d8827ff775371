"""Scores: decoded atoms compared with the ground truth, and generated samples checked.

- :mod:`~crystalgrid.models.scoring.metrics`: ``Scorer``, the paper's scores of atoms, and
  the paper's numbers; ``to_markdown``.
- :mod:`~crystalgrid.models.scoring.evaluate`: ``evaluate(checkpoint, view)``: reconstruct,
  decode, score.
- :mod:`~crystalgrid.models.scoring.decoders`: the decoders alone on a split's true grids.
- :mod:`~crystalgrid.models.scoring.predictions`: another model's output, same scorers.
- :mod:`~crystalgrid.models.scoring.matching`: CDVAE's StructureMatcher rate.
- :mod:`~crystalgrid.models.scoring.generated`: spacing, validity and the conditional check
  of generated samples.
- :mod:`~crystalgrid.models.scoring.distances`: distances between atoms in a box.

Nothing is imported here; every module but ``evaluate`` imports without torch.
"""
