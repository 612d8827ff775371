"""Fresh samples every step: crystals held on a device, rotated or cropped and gridded there.

:class:`GridSampler` keeps a dataset's crystals (lattice, fractional sites, atomic numbers)
as tensors on a device and grids new random transforms of them with the torch backend
(:mod:`crystalgrid.grids.torch_backend`), so a trainer sees a new rotation or crop of every
crystal each epoch instead of the few stored ones. Passing the stored transforms
(``samples/transform``) reproduces a built store's grids within
:data:`~crystalgrid.grids.common.BACKEND_AGREEMENT`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from crystalgrid.grids.common import check_representation
from crystalgrid.grids.placement import Crystal
from crystalgrid.grids.torch_backend import (
    DEFAULT_CHUNK,
    DEFAULT_MAX_BYTES,
    BatchPlacement,
    compact_rows,
    density_grids,
    place_batch,
    random_transforms,
    species_grids,
)
from crystalgrid.spec import GridSpec

__all__ = ["GridBatch", "GridSampler", "StoredCrystals", "StoredSamples", "pad_crystals"]


class StoredCrystals(Protocol):
    """What :meth:`GridSampler.from_dataset` reads of a built dataset (a
    :class:`crystalgrid.dataset.Dataset` is one; the grids layer does not import it)."""

    @property
    def attrs(self) -> dict[str, Any]: ...

    @property
    def representation(self) -> str: ...

    @property
    def spec(self) -> GridSpec: ...

    def per_sample(self, name: str) -> np.ndarray: ...

    def crystal_table(self) -> dict[str, np.ndarray]: ...

    def all(self) -> StoredSamples: ...


class StoredSamples(Protocol):
    """A range of a dataset's samples (a :class:`crystalgrid.dataset.DatasetView` is one)."""

    @property
    def dataset(self) -> StoredCrystals: ...

    @property
    def start(self) -> int: ...

    @property
    def stop(self) -> int: ...


def pad_crystals(
    crystals: Sequence[Crystal], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded tensors of crystals: lattice (C, 3, 3) f64, frac (C, S, 3) f64, numbers (C, S)
    uint8 and mask (C, S) bool, S the largest cell."""
    width = max((len(c) for c in crystals), default=0)
    n = len(crystals)
    lattice = np.zeros((n, 3, 3))
    frac = np.zeros((n, width, 3))
    numbers = np.zeros((n, width), dtype=np.uint8)
    mask = np.zeros((n, width), dtype=bool)
    for i, c in enumerate(crystals):
        lattice[i], frac[i, : len(c)], numbers[i, : len(c)] = c.lattice, c.frac, c.numbers
        mask[i, : len(c)] = True
    return tuple(torch.from_numpy(a).to(device) for a in (lattice, frac, numbers, mask))  # type: ignore[return-value]


class GridBatch(NamedTuple):
    """Grids of one batch drawn by :class:`GridSampler`.

    Attributes:
        density: (B, bins, bins, bins) float32, electrons per Å^3.
        species: (B, bins, bins, bins) uint8 atomic numbers.
        transforms: (B, 4, 4) float64, crystal Cartesian Å -> box Å.
        crystals: (B,) int64 index of each sample's crystal in the sampler.
    """

    density: torch.Tensor
    species: torch.Tensor
    transforms: torch.Tensor
    crystals: torch.Tensor


class GridSampler:
    """Crystals held on a device, gridded afresh every step.

    ``sampler.sample(batch_size, generator)`` draws crystals (uniformly, with replacement, or
    the ones given), fresh transforms (:func:`random_transforms`), and grids them.
    ``sampler.grids(crystals, transforms)`` grids explicit transforms (e.g. the stored
    ``samples/transform``, reproducing a built dataset's grids).

    Args:
        lattice: (C, 3, 3), frac (C, S, 3), numbers (C, S), mask (C, S): the crystals
            (see :func:`pad_crystals`), moved to ``device``.
        representation: ``"single"`` or ``"repeated"``.
        spec: grid geometry.
        rotate: rotate the samples (default: True for single, False for repeated).
        shift: for ``repeated``, random fractional offsets (else the cell origin at the box
            corner).
        material_ids: optional ids of the crystals (kept for the user).
        device: where the crystals live and the grids are made; the lattice's if None.
        chunk, max_bytes: passed to :func:`density_grids`.
    """

    def __init__(
        self,
        lattice: torch.Tensor,
        frac: torch.Tensor,
        numbers: torch.Tensor,
        mask: torch.Tensor,
        *,
        representation: str,
        spec: GridSpec | None = None,
        rotate: bool | None = None,
        shift: bool = True,
        material_ids: Sequence[str] | None = None,
        device: torch.device | str | None = None,
        chunk: int = DEFAULT_CHUNK,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        check_representation(representation)
        device = torch.device(device) if device is not None else lattice.device
        mask, frac, numbers = compact_rows(mask.to(torch.bool), frac, numbers)
        self.device = device
        self.lattice = lattice.to(device, torch.float64)
        self.frac = frac.to(device, torch.float64)
        self.numbers = numbers.to(device)
        self.mask = mask.to(device)
        self.sites = self.mask.sum(1)
        if len(self.lattice) == 0:
            raise ValueError("a GridSampler needs at least one crystal")
        if int(self.sites.min()) < 1:
            raise ValueError("every crystal needs at least one site")
        self.representation = representation
        self.spec = spec or GridSpec()
        self.rotate = (representation == "single") if rotate is None else rotate
        self.shift = shift
        self.material_ids = list(material_ids) if material_ids is not None else None
        self.chunk, self.max_bytes = chunk, max_bytes
        #: Index of each crystal in the store it was read from (``from_dataset``), else None.
        self.crystal_index: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lattice)

    def __repr__(self) -> str:
        return (
            f"<GridSampler {len(self)} crystals, {self.representation}, rotate={self.rotate}, "
            f"on {self.device}>"
        )

    @classmethod
    def from_crystals(
        cls,
        crystals: Sequence[Crystal],
        *,
        representation: str,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> GridSampler:
        """A sampler over :class:`~crystalgrid.grids.placement.Crystal` objects."""
        lattice, frac, numbers, mask = pad_crystals(crystals, device)
        return cls(
            lattice, frac, numbers, mask, representation=representation, device=device, **kwargs
        )

    @classmethod
    def from_dataset(
        cls,
        data: StoredCrystals | StoredSamples,
        *,
        device: torch.device | str | None = None,
        representation: str | None = None,
        rotate: bool | None = None,
        spec: GridSpec | None = None,
        **kwargs: Any,
    ) -> GridSampler:
        """The crystals of a dataset view (``open_dataset(path).split("train")``) or dataset.

        Reads the stored structures (``crystals/lattice``, ``site_offset``, ``frac``,
        ``number``) of the crystals whose samples are in the view; the crystals keep the
        store's order (``crystal_index`` maps back). Representation, rotation and grid spec
        default to the dataset's.
        """
        view = data.all() if hasattr(data, "all") else data  # a dataset, or a view of one
        dataset = view.dataset
        index = np.unique(dataset.per_sample("crystal")[view.start : view.stop]).astype(np.int64)
        c = dataset.crystal_table()
        offsets = c["site_offset"]
        frac_all, number_all = c["frac"], c["number"]
        lattice = np.asarray(c["lattice"])[index]
        counts = offsets[index + 1] - offsets[index]
        width = int(counts.max()) if len(index) else 0
        frac = np.zeros((len(index), width, 3))
        numbers = np.zeros((len(index), width), dtype=np.uint8)
        mask = np.arange(width)[None, :] < counts[:, None]
        take = offsets[index][:, None] + np.minimum(np.arange(width)[None, :], counts[:, None] - 1)
        frac[mask] = frac_all[take[mask]]
        numbers[mask] = number_all[take[mask]]
        ids = [str(m) for m in np.asarray(c["material_id"])[index]]
        if rotate is None:
            rotate = dataset.attrs.get("rotate")
        sampler = cls(
            torch.from_numpy(lattice),
            torch.from_numpy(frac),
            torch.from_numpy(numbers),
            torch.from_numpy(mask),
            representation=representation or dataset.representation,
            spec=spec or dataset.spec,
            rotate=rotate,
            material_ids=ids,
            device=device,
            **kwargs,
        )
        sampler.crystal_index = index
        return sampler

    def _batch(self, crystals: torch.Tensor) -> tuple[torch.Tensor, ...]:
        width = max(1, int(self.sites[crystals].max()))
        return (
            self.lattice[crystals],
            self.frac[crystals, :width],
            self.numbers[crystals, :width],
            self.mask[crystals, :width],
        )

    def place(self, crystals: torch.Tensor, transforms: torch.Tensor) -> BatchPlacement:
        """Atoms of crystals ``crystals`` (B,) under ``transforms`` (B, 4, 4)."""
        crystals = torch.as_tensor(crystals, dtype=torch.int64, device=self.device)
        lattice, frac, numbers, mask = self._batch(crystals)
        return place_batch(lattice, frac, numbers, mask, transforms, self.representation, self.spec)

    def grids(
        self, crystals: torch.Tensor, transforms: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(density, species) grids of crystals ``crystals`` (B,) under ``transforms``.

        As :func:`crystalgrid.samples.sample_from_placement`: the density of every atom
        placed, the species of the atoms inside the box.
        """
        p = self.place(crystals, transforms.to(self.device))
        density = density_grids(
            p.positions,
            p.numbers,
            p.mask,
            self.spec,
            chunk=self.chunk,
            max_bytes=self.max_bytes,
        )
        # As the CPU builder: the density sums every atom near the box, the species grid
        # labels the sample's own atoms (inside the box), the ground truth.
        return density, species_grids(p.positions, p.numbers, p.inside, self.spec)

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        *,
        crystals: torch.Tensor | None = None,
    ) -> GridBatch:
        """A fresh batch: random crystals (unless given), random transforms, their grids.

        ``generator`` must live on the sampler's device; a seeded one makes the batch
        reproducible on that device type.
        """
        if crystals is None:
            crystals = torch.randint(
                len(self), (batch_size,), generator=generator, device=self.device
            )
        else:
            crystals = torch.as_tensor(crystals, dtype=torch.int64, device=self.device)
        transforms = random_transforms(
            self.lattice[crystals],
            self.representation,
            self.spec,
            generator=generator,
            rotate=self.rotate,
            shift=self.shift,
        )
        density, species = self.grids(crystals, transforms)
        return GridBatch(density, species, transforms, crystals)
