"""The latent space (docs/latent.md): random draws, interpolation, the conditional model's
condition, and the realism scorer of the paper's appendix G.

- :mod:`~crystalgrid.models.latent.draws`: ``random_draws`` (``Samples``), ``write_samples``.
- :mod:`~crystalgrid.models.latent.interpolate`: ``interpolate(checkpoint, a, b, steps=)``.
- :mod:`~crystalgrid.models.latent.conditioning`: which condition asks for which largest
  atomic number (no torch).
- :mod:`~crystalgrid.models.latent.realism`: the realism scorer.

Nothing is imported here.
"""
