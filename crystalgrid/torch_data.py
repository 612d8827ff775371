"""A dataset view for a ``torch.utils.data.DataLoader`` (imported only when torch is wanted).

- :class:`TorchView`: map-style; indexing reads through the view's one-chunk cache, so a
  sequential sampler decodes each chunk once, a shuffling sampler a chunk per item.
- :class:`TorchStream`: iterable; reads whole chunks in a chunk-wise shuffled order
  (:mod:`crystalgrid.read_order`) and shares the epoch among ranks and DataLoader workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from crystalgrid.errors import CrystalgridError
from crystalgrid.read_order import divide

try:
    import torch
    from torch.utils.data import Dataset as _TorchDataset
    from torch.utils.data import IterableDataset as _TorchIterable
    from torch.utils.data import get_worker_info
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise CrystalgridError("to_torch() needs PyTorch: pip install 'crystalgrid[models]'") from exc

__all__ = ["TorchStream", "TorchView"]

_FIELDS = ("density", "species", "atom_positions", "atom_numbers", "transform", "material_id")


class StoreSplit(Protocol):
    """What these datasets read of a split (a :class:`crystalgrid.dataset.DatasetView` is one)."""

    start: int
    dataset: Any  # a crystalgrid.dataset.Dataset: sample() and rows_in_order()

    def __len__(self) -> int: ...

    def span(self) -> int: ...

    def order(
        self,
        *,
        shuffle: bool,
        seed: int | Sequence[int] = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        window: int = 4,
    ) -> np.ndarray: ...


def _check(fields: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; choose from {_FIELDS}")
    return tuple(fields)


#: The dtypes species grids can be delivered in.
SPECIES_DTYPES = ("int64", "uint8")


def _species_dtype(name: str) -> str:
    if name not in SPECIES_DTYPES:
        raise ValueError(f"species_dtype must be one of {SPECIES_DTYPES}, got {name!r}")
    return name


def _tensor(name: str, value: Any, *, copy: bool, species: str) -> Any:
    """One field of one sample as the item carries it (species as ``species``, ids as str);
    other arrays are copied when ``copy``, else shared."""
    if name == "material_id":
        return value
    if name == "species" and species == "int64":
        return torch.from_numpy(value.astype(np.int64))
    return torch.from_numpy(np.array(value) if copy else np.asarray(value))


class TorchView(_TorchDataset):
    """Items are dicts of tensors: density float32 (B, B, B), species (B, B, B) uint8 as
    stored (int64 with ``species_dtype="int64"``), ...

    Indexing reads through the view's one-chunk cache, so a sequential sampler decodes each
    chunk once; with ``shuffle=True`` in a DataLoader every item decodes a whole chunk (use
    ``view.to_torch(shuffle=True)``, a :class:`TorchStream`, instead).
    """

    def __init__(
        self, view: StoreSplit, fields: tuple[str, ...], *, species_dtype: str = "uint8"
    ) -> None:
        self.view = view
        self.fields = _check(fields)
        self.species_dtype = _species_dtype(species_dtype)

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.view):
            raise IndexError(f"sample {index} is out of range for a view of {len(self.view)}")
        sample = self.view.dataset.sample(self.view.start + int(index), self.fields)
        item: dict[str, Any] = {"index": sample["index"]}
        for name in self.fields:
            # Copied: the grids are rows of the cached chunk, which later items share.
            item[name] = _tensor(name, sample[name], copy=True, species=self.species_dtype)
        return item


class TorchStream(_TorchIterable):
    """An epoch of a view in chunk-wise order, shared among ranks and DataLoader workers.

    Items are those of :class:`TorchView`; their grids are not copied (each decoded chunk
    is read once). Within one rank every sample comes once per epoch (the rank's share: see
    :meth:`crystalgrid.dataset.DatasetView.order`); each DataLoader worker reads a contiguous
    part of it, cut at multiples of ``batch_size`` when it is given. The order depends on
    ``seed`` and the epoch (:meth:`set_epoch`) only, not on the number of workers; the
    DataLoader interleaves the workers' batches.
    """

    def __init__(
        self,
        view: StoreSplit,
        fields: tuple[str, ...],
        *,
        shuffle: bool,
        seed: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        batch_size: int | None,
        window: int,
        species_dtype: str = "uint8",
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.view = view
        self.fields = _check(fields)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.batch_size = batch_size
        self.window = window
        self.species_dtype = _species_dtype(species_dtype)
        # In shared memory: workers (persistent ones included) see set_epoch's value.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` from the next iteration on (also in the
        DataLoader's workers, persistent or not)."""
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        n = len(self.view)
        if self.world_size == 1:
            return n
        return n // self.world_size if self.drop_last else math.ceil(n / self.world_size)

    def order(self) -> np.ndarray:
        """This rank's store indices for the current epoch (all workers together)."""
        return self.view.order(
            shuffle=self.shuffle,
            seed=(self.seed, self.epoch),
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
            window=self.window,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = self.order()
        worker = get_worker_info()
        if worker is not None:
            order = divide(order, worker.id, worker.num_workers, multiple=self.batch_size or 1)
        # Not copied: each row of a decoded span is read once, then the span is dropped.
        for row in self.view.dataset.rows_in_order(order, self.view.span(), self.fields):
            item: dict[str, Any] = {"index": row["index"]}
            for name in self.fields:
                item[name] = _tensor(name, row[name], copy=False, species=self.species_dtype)
            yield item
