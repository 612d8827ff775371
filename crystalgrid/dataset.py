"""Load a built dataset: ``open_dataset(path).split("train")``.

A view is a contiguous range of samples (each split is stored as one range). It supports
``len()``, integer indexing (one sample as a dict), slicing (a batch: the same fields stacked),
:meth:`DatasetView.iter_batches` (the fast path: whole chunks, optionally shuffled chunk-wise),
:meth:`DatasetView.to_dask` and :meth:`DatasetView.to_torch`.

A sample dict holds ``density`` (B, B, B) float32 (electrons per Å^3), ``species`` (B, B, B)
uint8, ``atom_positions`` (n, 3) float64 box Å, ``atom_numbers`` (n,) uint8, ``material_id``,
``transform`` (4, 4) float64 (crystal Cartesian Å -> box Å), ``n_outside`` and ``index``
(the sample's position in the whole store).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from crystalgrid.errors import BadInputError, CrystalgridError, RemoteStorageError
from crystalgrid.read_order import epoch_order, share, span_edges
from crystalgrid.remote import is_url
from crystalgrid.spec import GridSpec
from crystalgrid.store import (
    SPLITS,
    ChunkReader,
    StoreMeta,
    has_named_dimensions,
    open_array,
    open_store,
    read_rows,
)

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["FIELDS", "Dataset", "DatasetView", "open_dataset"]

FIELDS = (
    "density",
    "species",
    "atom_positions",
    "atom_numbers",
    "material_id",
    "transform",
    "n_outside",
)

#: The columns of ``rejects/``, in the order :meth:`Dataset.rejects` gives them.
REJECT_COLUMNS = ("material_id", "reason", "detail")

#: Chunks of the grid arrays read together by the fast paths (a "span").
CHUNKS_PER_READ = 4

#: Spans whose samples a shuffled order mixes (see :mod:`crystalgrid.read_order`).
WINDOW = 4


def _check_fields(fields: tuple[str, ...]) -> None:
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; choose from {FIELDS}")


def open_dataset(
    location: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
) -> Dataset:
    """Open a dataset written by ``crystalgrid build`` (lazily: nothing big is read).

    Raises:
        NotFoundError: no dataset there.
        BadInputError: not a crystalgrid store, or a build that has not completed.
        IntegrityError: the store's metadata is damaged or incomplete.
    """
    group, attrs = open_store(location, storage_options=storage_options)
    meta = StoreMeta.from_attrs(attrs)
    if not meta.complete:
        raise BadInputError(
            f"{location} is an unfinished build (state: {meta.state}); "
            "run the same crystalgrid build command again to complete it"
        )
    return Dataset(group, attrs, str(location), storage_options=storage_options)


class Dataset:
    """A built dataset of one representation."""

    def __init__(
        self,
        group: zarr.Group,
        meta: dict[str, Any],
        location: str,
        *,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self._group = group
        self._storage_options = storage_options
        self._pid = os.getpid()
        #: The stored ``crystalgrid`` attribute, as written (JSON types).
        self.attrs = meta
        #: The same, typed.
        self.meta = StoreMeta.from_attrs(meta)
        self.location = location
        self.spec = GridSpec.from_dict(self.meta.grid)
        self.representation: str = self.meta.representation
        self._cache: dict[str, tuple[int, np.ndarray]] = {}
        self._arrays: dict[str, zarr.Array] = {}
        self._readers: dict[str, ChunkReader] = {}
        self._small: dict[str, np.ndarray] = {}

    @property
    def group(self) -> zarr.Group:
        """The store's root group. A process forked from the one that opened a store by URL
        (a ``DataLoader`` worker) opens it again: the parent's connections belong to the
        parent's event loop and cannot be used there."""
        if self._pid != os.getpid():
            if is_url(self.location):
                try:
                    self._group, _ = open_store(
                        self.location, storage_options=self._storage_options
                    )
                except RemoteStorageError as exc:  # named as a chunk's read is
                    raise RemoteStorageError(f"{exc} (reading zarr.json)") from None
                self._arrays.clear()
                self._readers.clear()
            self._pid = os.getpid()  # only once opened: a failed open is tried again
        return self._group

    def __len__(self) -> int:
        return int(self.meta.n_samples or 0)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k} {len(self.split(k))}" for k in SPLITS)
        return f"<crystalgrid Dataset {self.location}: {self.representation}, {sizes} samples>"

    @property
    def splits(self) -> dict[str, int]:
        """Samples per split."""
        return {name: len(self.split(name)) for name in SPLITS}

    def split(self, name: str) -> DatasetView:
        """The samples of ``"train"``, ``"val"`` or ``"test"``.

        Raises:
            BadInputError: another name.
        """
        if name not in SPLITS:
            raise BadInputError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        start, stop = self.meta.split_range(name)
        return DatasetView(self, start, stop, name)

    def all(self) -> DatasetView:
        """Every sample, all splits."""
        return DatasetView(self, 0, len(self), "all")

    def rejects(self) -> list[tuple[str, str, str]]:
        """(material id, reason, detail) of every structure the build left out."""
        columns = (self._read(f"rejects/{name}", slice(None)) for name in REJECT_COLUMNS)
        return list(zip(*columns, strict=True))

    def to_xarray(self) -> Any:
        """The grids and per-sample arrays as one ``xarray.Dataset`` (lazy, dask-backed).

        Variables ``density``, ``species`` (sample, x, y, z) and those of ``samples/``
        (``crystal``, ``material_id``, ``split``, ``transform`` (sample, row, column), ...).
        ``xarray.open_zarr(path)`` and ``xarray.open_datatree(path, engine="zarr")`` work
        too; this adds the per-sample arrays to the grids.

        Raises:
            BadInputError: a store built before named dimensions (run ``crystalgrid
                upgrade``).
            CrystalgridError: xarray not installed.
        """
        try:
            import xarray as xr
        except ImportError:
            raise CrystalgridError("to_xarray() needs xarray: pip install xarray") from None
        if not has_named_dimensions(self.group):
            raise BadInputError(
                f"{self.location} was built before stores named their dimensions; "
                f"run crystalgrid upgrade {self.location} (rewrites metadata only)"
            )
        store = self.group.store
        grids = xr.open_zarr(store, group=self.group.path or None, consolidated=True)
        per_sample = xr.open_zarr(
            store, group=f"{self.group.path}/samples".lstrip("/"), consolidated=False
        )
        return xr.merge([grids, per_sample.drop_vars("atom_offset", errors="ignore")])

    def split_ids(self) -> dict[str, list[str]]:
        """The material ids of each split's crystals (what a split file holds)."""
        ids = self._read("crystals/material_id", slice(None))
        codes = self._read("crystals/split", slice(None))
        return {name: [str(m) for m in ids[codes == i]] for i, name in enumerate(SPLITS)}

    def structure(self, crystal: int) -> Structure:
        """The source structure of crystal ``crystal`` as a pymatgen ``Structure``."""
        from pymatgen.core import Lattice, Structure

        lo, hi = (int(i) for i in self._read("crystals/site_offset", slice(crystal, crystal + 2)))
        lattice = self._read("crystals/lattice", slice(crystal, crystal + 1))[0]
        sites = slice(lo, hi)
        return Structure(
            Lattice(lattice),
            self._read("crystals/number", sites).tolist(),
            self._read("crystals/frac", sites),
        )

    def crystal_table(self) -> dict[str, np.ndarray]:
        """Every stored source structure, as arrays (read whole; ~100 B per site).

        ``lattice`` (C, 3, 3) Å, ``site_offset`` (C + 1,) (the sites of crystal c are
        ``site_offset[c]:site_offset[c + 1]``), ``frac`` (sites, 3) fractional, ``number``
        (sites,) atomic numbers, ``material_id`` (C,).
        """
        names = ("lattice", "site_offset", "frac", "number", "material_id")
        return {name: np.asarray(self._read(f"crystals/{name}", slice(None))) for name in names}

    def per_sample(self, name: str) -> np.ndarray:
        """One per-sample array of every sample, e.g. ``"crystal"`` (crystal index of each
        sample) or ``"material_id"``; read whole once and cached (~150 B/sample in all)."""
        return self._per_sample(name)

    @cached_property
    def atom_offset(self) -> np.ndarray:
        """(n + 1,) int64: the atoms of sample i are ``atom_offset[i]:atom_offset[i + 1]``."""
        return self._read("samples/atom_offset", slice(None))

    def _array(self, name: str) -> zarr.Array:
        group = self.group  # first: a forked process drops the parent's arrays
        if name not in self._arrays:
            self._arrays[name] = open_array(group, name, self.location)
        return self._arrays[name]

    def _reader(self, name: str) -> ChunkReader:
        array = self._array(name)  # first: a forked process drops the parent's readers
        if name not in self._readers:
            self._readers[name] = ChunkReader(array, self.location)
        return self._readers[name]

    def _read(self, name: str, selection: slice) -> np.ndarray:
        """Rows of array ``name``: the numeric arrays (atoms, offsets, lattices) as checked Blosc
        frames (a truncated chunk is an error, never decoded), the strings through zarr; a
        damaged store is a one-line error, not a traceback."""
        reader = self._reader(name)
        if reader.direct and selection.step in (None, 1):
            return reader.read(*selection.indices(reader.array.shape[0])[:2])
        return read_rows(reader.array, selection, self.location)

    def _grids(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of a grid array (``density`` as float32), decoded in place."""
        rows = self._reader(name).read(start, stop)
        return rows.astype(np.float32, copy=False) if name == "density" else rows

    def _per_sample(self, name: str) -> np.ndarray:
        """A small per-sample array (ids, transforms, counts), read whole once (~150 B/sample)."""
        if name not in self._small:
            self._small[name] = self._read(f"samples/{name}", slice(None))
        return self._small[name]

    def _chunk(self, name: str, index: int) -> tuple[np.ndarray, int]:
        """The decoded chunk of ``name`` holding sample ``index`` (one chunk kept per array)."""
        step = self._array(name).chunks[0]
        number = index // step
        cached = self._cache.get(name)
        if cached is None or cached[0] != number:
            cached = (number, self._grids(name, number * step, (number + 1) * step))
            self._cache[name] = cached
        return cached[1], number * step

    def _atoms(self, start: int, stop: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        offset = self.atom_offset[start : stop + 1]
        rows = slice(int(offset[0]), int(offset[-1]))
        positions = self._read("atoms/position", rows).astype(np.float64)
        numbers = self._read("atoms/number", rows)
        cuts = offset - offset[0]
        return (
            [positions[a:b] for a, b in itertools.pairwise(cuts)],
            [numbers[a:b] for a, b in itertools.pairwise(cuts)],
        )

    def batch(self, start: int, stop: int, fields: tuple[str, ...] = FIELDS) -> dict[str, Any]:
        """Samples ``start:stop`` of the whole store, stacked (see the module docstring).

        ``fields`` picks what to read (``index`` always comes); reading only ``density`` and
        ``species`` is what training needs and the fastest.
        """
        _check_fields(fields)
        out: dict[str, Any] = {"index": np.arange(start, stop)}
        for name in ("density", "species"):
            if name in fields:
                out[name] = self._grids(name, start, stop)
        if "atom_positions" in fields or "atom_numbers" in fields:
            positions, numbers = self._atoms(start, stop)
            out["atom_positions"], out["atom_numbers"] = positions, numbers
        if "material_id" in fields:
            out["material_id"] = [str(m) for m in self._per_sample("material_id")[start:stop]]
        for name in ("transform", "n_outside"):
            if name in fields:
                out[name] = self._per_sample(name)[start:stop]
        return out

    def sample(self, index: int, fields: tuple[str, ...] = FIELDS) -> dict[str, Any]:
        """Sample ``index`` of the whole store (a dict, see the module docstring); ``fields``
        as in :meth:`batch`. The grids come from a decoded chunk kept per array, so reading
        samples in order decodes each chunk once."""
        _check_fields(fields)
        out: dict[str, Any] = {}
        for name in ("density", "species"):
            if name in fields:
                chunk, first = self._chunk(name, index)
                out[name] = chunk[index - first]
        if "atom_positions" in fields or "atom_numbers" in fields:
            positions, numbers = self._atoms(index, index + 1)
            out["atom_positions"], out["atom_numbers"] = positions[0], numbers[0]
        if "material_id" in fields:
            out["material_id"] = str(self._per_sample("material_id")[index])
        if "transform" in fields:
            out["transform"] = self._per_sample("transform")[index]
        if "n_outside" in fields:
            out["n_outside"] = int(self._per_sample("n_outside")[index])
        out["index"] = index
        return out

    def rows_in_order(
        self, order: np.ndarray, span: int, fields: tuple[str, ...] = FIELDS
    ) -> Iterator[dict[str, Any]]:
        """One dict per sample of ``order`` (store indices), as :meth:`sample` gives; the
        grids are views into the decoded span (see :class:`_Spans`)."""
        _check_fields(fields)
        spans = _Spans(self, order, span, fields)
        for position, (index, k) in enumerate(zip(spans.order, spans.ids, strict=True)):
            piece = spans.get(k)
            yield {name: value[index - k * span] for name, value in piece.items()}
            spans.release(position)

    def batches_in_order(
        self, order: np.ndarray, span: int, batch_size: int, *, fields: tuple[str, ...] = FIELDS
    ) -> Iterator[dict[str, Any]]:
        """Batches of ``batch_size`` samples of ``order`` (the last one shorter), stacked as
        :meth:`batch` gives them; each batch's rows are gathered span by span."""
        _check_fields(fields)
        spans = _Spans(self, order, span, fields)
        ids, rows = np.asarray(spans.ids), np.asarray(spans.order) - np.asarray(spans.ids) * span
        for a in range(0, len(ids), batch_size):
            b = min(a + batch_size, len(ids))
            out: dict[str, Any] = {}
            for k in dict.fromkeys(ids[a:b].tolist()):
                piece = spans.get(k)
                where = np.flatnonzero(ids[a:b] == k)
                taken = rows[a:b][where]
                for name, value in piece.items():
                    if isinstance(value, list):
                        target = out.setdefault(name, [None] * (b - a))
                        for w, r in zip(where.tolist(), taken.tolist(), strict=True):
                            target[w] = value[r]
                    else:
                        if name not in out:
                            out[name] = np.empty((b - a, *value.shape[1:]), dtype=value.dtype)
                        out[name][where] = value[taken]
            spans.release(b - 1)
            yield out


class _Spans:
    """The decoded spans an order reads, each kept until the last position that needs it.

    Spans are ``span`` samples aligned to multiples of ``span`` (read whole with
    :meth:`Dataset.batch`). A chunk-wise order (:mod:`crystalgrid.read_order`) so keeps a few
    spans in memory and decodes each once.
    """

    def __init__(
        self, dataset: Dataset, order: np.ndarray, span: int, fields: tuple[str, ...]
    ) -> None:
        order = np.asarray(order, dtype=np.int64)
        ids = order // span
        unique, first_from_end = np.unique(ids[::-1], return_index=True)
        self.last_use = dict(
            zip(unique.tolist(), (len(order) - 1 - first_from_end).tolist(), strict=True)
        )
        self.order, self.ids = order.tolist(), ids.tolist()
        self.dataset, self.span, self.fields = dataset, span, fields
        self.decoded: dict[int, dict[str, Any]] = {}

    def get(self, k: int) -> dict[str, Any]:
        """Span ``k``, decoded on first use."""
        piece = self.decoded.get(k)
        if piece is None:
            stop = min((k + 1) * self.span, len(self.dataset))
            piece = self.decoded[k] = self.dataset.batch(k * self.span, stop, self.fields)
        return piece

    def release(self, position: int) -> None:
        """Drop the spans no position after ``position`` needs."""
        for k in [k for k in self.decoded if self.last_use[k] <= position]:
            del self.decoded[k]


class DatasetView:
    """Samples ``start:stop`` of a dataset (one split, or all)."""

    def __init__(self, dataset: Dataset, start: int, stop: int, name: str) -> None:
        self.dataset = dataset
        self.start = int(start)
        self.stop = int(stop)
        self.name = name

    def __len__(self) -> int:
        return self.stop - self.start

    def __repr__(self) -> str:
        return f"<crystalgrid view {self.name}: {len(self)} samples of {self.dataset.location}>"

    @property
    def spec(self) -> GridSpec:
        return self.dataset.spec

    def __getitem__(self, key: int | slice) -> dict[str, Any]:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("views take slices with step 1; use iter_batches to shuffle")
            return self.dataset.batch(self.start + start, self.start + max(start, stop))
        if not isinstance(key, int | np.integer):
            raise TypeError(f"index a view with an int or a slice, not {type(key).__name__}")
        index = int(key) + len(self) if key < 0 else int(key)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {key} is out of range for a view of {len(self)}")
        return self.dataset.sample(self.start + index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def span(self) -> int:
        """Samples per read of the fast paths: :data:`CHUNKS_PER_READ` chunks."""
        return int(self.dataset._array("density").chunks[0]) * CHUNKS_PER_READ

    def order(
        self,
        *,
        shuffle: bool,
        seed: int | Sequence[int] = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        window: int = WINDOW,
    ) -> np.ndarray:
        """The store indices this rank reads in one epoch (see :mod:`crystalgrid.read_order`).

        Shuffled, the order is chunk-wise: spans of :meth:`span` samples are permuted and the
        samples of every ``window`` spans are permuted together. With ``world_size`` > 1 the
        epoch is cut into equal contiguous parts, one per rank, the first samples repeated
        to fill the last part (``drop_last``: the remainder is left out instead).
        """
        order = epoch_order(
            self.start, self.stop, self.span(), shuffle=shuffle, seed=seed, window=window
        )
        return share(order, rank, world_size, drop_last=drop_last)

    def iter_batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int | Sequence[int] = 0,
        drop_last: bool = False,
        fields: tuple[str, ...] = FIELDS,
        rank: int = 0,
        world_size: int = 1,
        window: int = WINDOW,
    ) -> Iterator[dict[str, Any]]:
        """Batches read whole chunks at a time (the fast way to train).

        With ``shuffle``, the order is chunk-wise (:meth:`order`): a batch mixes samples of
        ``window`` random spans of whole chunks; it is a function of ``seed`` (pass the
        epoch). ``rank``/``world_size`` give each rank of a multi-GPU job its equal share;
        ``drop_last`` leaves out the last short batch (and, across ranks, the remainder).
        ``fields`` as in :meth:`Dataset.batch`.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        _check_fields(fields)
        if shuffle or world_size != 1:
            order = self.order(
                shuffle=shuffle,
                seed=seed,
                rank=rank,
                world_size=world_size,
                drop_last=drop_last,
                window=window,
            )
            batches = self.dataset.batches_in_order(order, self.span(), batch_size, fields=fields)
            for batch in batches:
                if len(batch["index"]) == batch_size or not drop_last:
                    yield batch
            return
        # In order: batches are views into reads of whole chunks; only a batch that
        # straddles two reads is copied.
        edges = span_edges(self.start, self.stop, self.span())
        pending: list[dict[str, Any]] = []
        count = 0
        for a, b in itertools.pairwise(edges.tolist()):
            pending.append(self.dataset.batch(a, b, fields))
            count += b - a
            while count >= batch_size:
                batch, pending = _cut(pending, batch_size)
                count -= batch_size
                yield batch
        if count and not drop_last:
            yield _cut(pending, count)[0]

    def to_dask(self) -> dict[str, Any]:
        """Dask arrays of this view: ``density``, ``species``, ``transform``, ``crystal``."""
        import dask.array as da

        g = self.dataset.group
        sl = slice(self.start, self.stop)
        return {
            "density": da.from_zarr(g["density"])[sl],
            "species": da.from_zarr(g["species"])[sl],
            "transform": da.from_zarr(g["samples/transform"])[sl],
            "crystal": da.from_zarr(g["samples/crystal"])[sl],
        }

    def to_xarray(self) -> Any:
        """This view's samples of :meth:`Dataset.to_xarray`."""
        return self.dataset.to_xarray().isel(sample=slice(self.start, self.stop))

    def to_torch(
        self,
        fields: tuple[str, ...] = ("density", "species"),
        *,
        shuffle: bool | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        batch_size: int | None = None,
        window: int = WINDOW,
        species_dtype: str = "uint8",
    ) -> Any:
        """This view for a ``torch.utils.data.DataLoader``.

        Each item is a dict of tensors for ``fields`` (density float32 (B, B, B), species
        (B, B, B) uint8 as stored) plus ``index``; ragged atoms are left out unless asked for
        (then pass a ``collate_fn`` that keeps lists). Cast species with ``.long()`` on the
        device for ``cross_entropy``: ``species_dtype="int64"`` does it in the loader, at 8x
        the bytes through its workers.

        - ``to_torch()``: a map-style dataset. Read in order it decodes each chunk once;
          with ``DataLoader(shuffle=True)`` every item decodes a whole chunk (slow).
        - ``to_torch(shuffle=True, seed=...)`` (or ``shuffle=False``, or any of ``rank``,
          ``world_size``, ``batch_size``): an iterable dataset
          that reads whole chunks in the chunk-wise order of :meth:`order` and splits the
          epoch among the DataLoader's workers; every sample comes once per epoch, the
          order depends on ``seed`` and the epoch (``set_epoch``) only. ``rank`` and
          ``world_size`` give each rank of a multi-GPU job its equal share (as
          ``DistributedSampler``). Pass the DataLoader's ``batch_size`` so that workers
          split at batch boundaries (one short batch per epoch, not one per worker).
        """
        if shuffle is None and world_size == 1 and rank == 0 and batch_size is None:
            from crystalgrid.torch_data import TorchView

            return TorchView(self, fields, species_dtype=species_dtype)
        from crystalgrid.torch_data import TorchStream

        return TorchStream(
            self,
            fields,
            shuffle=bool(shuffle),
            seed=seed,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
            batch_size=batch_size,
            window=window,
            species_dtype=species_dtype,
        )


def _rows(batch: dict[str, Any]) -> int:
    return len(batch["index"])


def _slice(batch: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    return {k: v[a:b] for k, v in batch.items()}


def _cut(pending: list[dict[str, Any]], size: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first ``size`` rows of the pieces, and the pieces left."""
    taken, rest, need = [], list(pending), size
    while need:
        head = rest.pop(0)
        n = _rows(head)
        if n <= need:
            taken.append(head)
            need -= n
        else:
            taken.append(_slice(head, 0, need))
            rest.insert(0, _slice(head, need, n))
            need = 0
    return _concat(taken), rest


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if len(parts) == 1:
        return parts[0]
    out: dict[str, Any] = {}
    for key, value in parts[0].items():
        if isinstance(value, list):
            out[key] = [x for p in parts for x in p[key]]
        else:
            out[key] = np.concatenate([p[key] for p in parts])
    return out
