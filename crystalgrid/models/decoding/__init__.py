"""Back to atoms: grids or class scores to atoms, atoms to pymatgen and CIF.

- :mod:`~crystalgrid.models.decoding.segmentation`: a segmentation (labels or class scores)
  to atoms: ``decode_atoms``, ``decode_class_scores``.
- :mod:`~crystalgrid.models.decoding.peakfit`: a density grid to atoms without training:
  ``fit_atoms``, ``fit_amplitudes``.
- :mod:`~crystalgrid.models.decoding.cell_species`: the species of a sample's atoms read
  together, from their amplitudes, a segmenter's scores and a prior over elements:
  ``CellSpecies``.
- :mod:`~crystalgrid.models.decoding.structure`: atoms to pymatgen and CIF:
  ``atoms_to_structure``, ``atoms_to_molecule``, ``write_cif``.

Decoding needs the class map, not a model: no module here imports torch, and this file
imports nothing.
"""
