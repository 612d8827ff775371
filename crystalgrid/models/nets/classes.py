"""The segmenter's label space: which class index stands for which atomic number.

Class 0 is "no atom"; class ``i`` is the ``i``-th species of the run, in ascending atomic
number. Checkpoints store the species list (:meth:`ClassMap.to_list`), the U-Net has one
output channel per class, and the decoders map class indices back to atomic numbers.

This module does not import torch.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["ClassMap"]


class ClassMap:
    """The segmenter's label space: class 0 is "no atom", class ``i`` the ``i``-th species.

    Args:
        species: the atomic numbers with a class, any order, 0 excluded (sorted internally).
    """

    def __init__(self, species: Iterable[int]) -> None:
        zs = sorted({int(z) for z in species})
        if any(z < 1 or z > 255 for z in zs):
            raise ValueError(f"atomic numbers must be in 1..255, got {zs}")
        self.species: tuple[int, ...] = tuple(zs)
        self.z_of_class = np.array((0, *zs), dtype=np.uint8)
        # Z -> class; -1 for species without a class.
        self.class_of_z = np.full(256, -1, dtype=np.int64)
        self.class_of_z[self.z_of_class] = np.arange(len(self.z_of_class))

    @property
    def n_classes(self) -> int:
        """Number of classes including "no atom"."""
        return len(self.z_of_class)

    def to_classes(self, species_grid: np.ndarray, *, unknown: int = -100) -> np.ndarray:
        """Species grid (Z per voxel, uint8) -> class indices (int64); unknown Z -> ``unknown``."""
        classes = self.class_of_z[np.asarray(species_grid, dtype=np.int64)]
        return np.where(classes < 0, unknown, classes)

    def to_species(self, class_grid: np.ndarray) -> np.ndarray:
        """Class indices -> Z per voxel (uint8)."""
        return self.z_of_class[np.asarray(class_grid)]

    def to_list(self) -> list[int]:
        """The species as a JSON-ready list (what checkpoints store)."""
        return list(self.species)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassMap) and other.species == self.species

    def __hash__(self) -> int:
        return hash(self.species)

    def __repr__(self) -> str:
        return f"ClassMap({list(self.species)})"
