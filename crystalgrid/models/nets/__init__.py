"""The networks and the model that joins them.

- :mod:`~crystalgrid.models.nets.vae`: :class:`~crystalgrid.models.nets.vae.VAE`, the beta-VAE.
- :mod:`~crystalgrid.models.nets.unet`: the 3-D attention U-Net.
- :mod:`~crystalgrid.models.nets.model`: :class:`~crystalgrid.models.nets.model.ReferenceModel`,
  both networks with the paper's loss, reconstruction and generation.
- :mod:`~crystalgrid.models.nets.classes`: :class:`~crystalgrid.models.nets.classes.ClassMap`,
  the segmenter's classes (no torch).

Nothing is imported here, so ``crystalgrid.models.nets.classes`` loads without torch.
"""
