"""Writing a store: its crystal and reject tables, its empty sample arrays, a build block's
samples with their checksums, and the final gathering of the atoms.

Samples are stored crystal by crystal with the crystals ordered by split (then by their order
in the source), so each split is one contiguous range of samples (:func:`create_store`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.core.array_spec import ArrayConfigParams

from crystalgrid.splits import SPLITS
from crystalgrid.store._checksums import CHECKSUM, checksum_whole_array, chunk_digest
from crystalgrid.store._meta import StoreMeta, split_ranges
from crystalgrid.store._open import array_at, arrays_under, group_at
from crystalgrid.store._schema import (
    BLOCK_ARRAYS,
    SCHEMA,
    array_schema,
    compressor,
    dimension_names,
)

__all__ = [
    "RejectRow",
    "StoredCrystal",
    "blocks_done",
    "consolidate",
    "create_sample_arrays",
    "create_store",
    "finalize",
    "read_crystals",
    "write_block",
    "write_whole",
]

#: Array configuration of every array: chunks are written even when they hold fill values
#: (:func:`~crystalgrid.store.verify` expects every chunk).
_CONFIG: ArrayConfigParams = {"write_empty_chunks": True}


class StoredCrystal(Protocol):
    """What the store keeps of one crystal (the build's scan rows)."""

    @property
    def material_id(self) -> str: ...

    @property
    def lattice(self) -> np.ndarray:
        """(3, 3) float64: rows are lattice vectors, Å."""

    @property
    def frac(self) -> np.ndarray:
        """(sites, 3) float64: fractional coordinates."""

    @property
    def numbers(self) -> np.ndarray:
        """(sites,): atomic numbers."""

    @property
    def properties(self) -> Mapping[str, float]: ...


class RejectRow(Protocol):
    """A structure left out of the store, with its reason."""

    @property
    def material_id(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def detail(self) -> str: ...


def write_whole(group: zarr.Group, name: str, data: np.ndarray) -> None:
    """Write ``data`` whole as array ``name``, chunked as :data:`SCHEMA` says (at most the
    array's length)."""
    chunk = max(1, min(array_schema(name).rows, len(data)))
    array = group.create_array(
        name,
        shape=data.shape,
        chunks=(chunk, *data.shape[1:]),
        dtype=data.dtype if data.dtype.kind != "U" else str,
        compressors=compressor(),
        fill_value=None if data.dtype.kind == "U" else 0,
        config=_CONFIG,
        overwrite=True,
        dimension_names=dimension_names(name),
    )
    if data.size:
        array[...] = data


def create_store(
    group: zarr.Group,
    meta: StoreMeta,
    *,
    crystals: Sequence[StoredCrystal],
    split: np.ndarray,
    rejects: Sequence[RejectRow],
    block_crystals: int,
    chunk_samples: int,
    dtype: str,
    density_compressor: BloscCodec,
) -> StoreMeta:
    """Write the crystal and reject tables and the empty sample arrays of a new store, then
    its attribute in state ``gridding``; return that attribute.

    Args:
        group: the new store's group.
        meta: its attribute in state ``creating`` (grid, samples per crystal, ...).
        crystals: the kept crystals in source order.
        split: (C,) uint8: the split code (0 train, 1 val, 2 test) of each crystal.
        rejects: every structure left out.
        block_crystals: crystals per build block (a whole number of grid chunks).
        chunk_samples: samples per chunk of the grids.
        dtype: of the density, ``"float32"`` or ``"float16"``.
        density_compressor: the density's codec.
    """
    order = np.lexsort((np.arange(len(split)), split))  # by split, then source order
    n = len(order)
    per_crystal = meta.samples_per_crystal
    names = _write_crystals(group, [crystals[i] for i in order], split[order], order)
    write_whole(group, "rejects/material_id", np.array([r.material_id for r in rejects], str))
    write_whole(group, "rejects/reason", np.array([r.reason for r in rejects], dtype=str))
    write_whole(group, "rejects/detail", np.array([r.detail for r in rejects], dtype=str))

    n_samples = n * per_crystal
    n_blocks = max(1, math.ceil(n / block_crystals))
    create_sample_arrays(
        group,
        n_samples=n_samples,
        bins=int(meta.grid["bins"]),
        chunk_samples=chunk_samples,
        block_samples=block_crystals * per_crystal,
        n_blocks=n_blocks,
        dtype=dtype,
        density_compressor=density_compressor,
    )
    counts = {name: int((split == i).sum()) for i, name in enumerate(SPLITS)}
    meta = meta.gridding(
        n_crystals=n,
        n_samples=n_samples,
        n_blocks=n_blocks,
        block_crystals=block_crystals,
        splits=split_ranges(counts, per_crystal),
        rejects=dict(sorted(Counter(r.reason for r in rejects).items())),
        properties=tuple(names),
    )
    meta.write(group)
    return meta


def _write_crystals(
    group: zarr.Group, crystals: Sequence[StoredCrystal], split: np.ndarray, order: np.ndarray
) -> list[str]:
    """Write ``crystals/`` (crystals in store order; ``order``: their source index); return
    the names of the properties written."""
    n = len(crystals)
    ids = np.array([c.material_id for c in crystals], dtype=str)
    counts = np.array([len(c.numbers) for c in crystals], dtype=np.int64)
    write_whole(group, "crystals/material_id", ids)
    write_whole(group, "crystals/split", split)
    write_whole(group, "crystals/source_index", order.astype(np.int64))
    write_whole(group, "crystals/lattice", np.array([c.lattice for c in crystals]).reshape(n, 3, 3))
    write_whole(group, "crystals/site_offset", np.concatenate([[0], np.cumsum(counts)]))
    write_whole(group, "crystals/frac", np.concatenate([c.frac for c in crystals]).reshape(-1, 3))
    write_whole(
        group, "crystals/number", np.concatenate([c.numbers for c in crystals]).astype(np.uint8)
    )
    names = sorted({k for c in crystals for k in c.properties})
    for name in names:
        values = np.array([c.properties.get(name, np.nan) for c in crystals], dtype=np.float64)
        write_whole(group, f"crystals/properties/{name}", values)
    return names


def create_sample_arrays(
    group: zarr.Group,
    *,
    n_samples: int,
    bins: int,
    chunk_samples: int,
    block_samples: int,
    n_blocks: int,
    dtype: str,
    density_compressor: BloscCodec,
) -> None:
    """Create the empty per-sample arrays of :data:`SCHEMA`, their checksum arrays, the build's
    ``_build/done`` and ``_pending`` (filled block by block by :func:`write_block`)."""
    grid_shape = (n_samples, bins, bins, bins)
    grid_chunks = (chunk_samples, bins, bins, bins)
    for name, dtype_of, codec in (
        ("density", dtype, density_compressor),
        ("species", array_schema("species").dtype, compressor()),
    ):
        group.create_array(
            name,
            shape=grid_shape,
            chunks=grid_chunks,
            dtype=dtype_of,
            dimension_names=dimension_names(name),
            compressors=codec,
            fill_value=0,
            config=_CONFIG,
            overwrite=True,
        )
    block = block_samples
    # The per-sample arrays, written block by block.
    for entry in SCHEMA:
        if entry.chunk != "block":
            continue
        tail = entry.tail
        if entry.dtype == "str":  # strings have no fill value
            group.create_array(
                entry.path,
                shape=(n_samples,),
                chunks=(block,),
                dtype=str,
                compressors=compressor(),
                config=_CONFIG,
                overwrite=True,
                dimension_names=entry.dims,
            )
        else:
            group.create_array(
                entry.path,
                shape=(n_samples, *tail),
                chunks=(block, *tail),
                dtype=entry.dtype,
                dimension_names=entry.dims,
                compressors=compressor(),
                fill_value=0,
                config=_CONFIG,
                overwrite=True,
            )
    for name in BLOCK_ARRAYS:
        array = array_at(group, name)
        n_chunks = array.cdata_shape[0]
        per_block = block // array.chunks[0]
        group.create_array(
            f"checksums/{name}",
            shape=(n_chunks,),
            chunks=(per_block,),
            dtype="uint64",
            dimension_names=dimension_names(f"checksums/{name}"),
            compressors=compressor(),
            fill_value=0,
            config=_CONFIG,
            overwrite=True,
        )
    group.create_array(
        "_build/done",
        shape=(n_blocks,),
        chunks=(1,),
        dtype="uint8",
        dimension_names=dimension_names("_build/done"),
        compressors=compressor(),
        fill_value=0,
        config=_CONFIG,
        overwrite=True,
    )
    group.create_group("_pending", overwrite=True)


def blocks_done(group: zarr.Group) -> np.ndarray:
    """``(blocks,)`` uint8: 1 for each build block whose samples are all written."""
    return np.asarray(array_at(group, "_build/done")[:])


def read_crystals(
    group: zarr.Group,
    first: int,
    last: int,
    *,
    arrays: dict[str, zarr.Array] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Crystals ``first:last`` as stored (``last`` clipped to the store): site offsets
    ``(k + 1,)`` (absolute), fractional sites ``(sites, 3)``, atomic numbers, lattices
    ``(k, 3, 3)`` Å, material ids, splits. ``arrays``: as for :func:`write_block`."""
    arrays = {} if arrays is None else arrays

    def rows(name: str, start: int, stop: int) -> np.ndarray:
        return np.asarray(_opened(group, arrays, name)[start:stop])

    last = min(last, _opened(group, arrays, "crystals/material_id").shape[0])
    offsets = rows("crystals/site_offset", first, last + 1)
    frac = rows("crystals/frac", offsets[0], offsets[-1])
    number = rows("crystals/number", offsets[0], offsets[-1])
    lattice = rows("crystals/lattice", first, last)
    ids = rows("crystals/material_id", first, last)
    split = rows("crystals/split", first, last)
    return offsets, frac, number, lattice, ids, split


def _opened(group: zarr.Group, arrays: dict[str, zarr.Array], name: str) -> zarr.Array:
    """Array ``name`` of ``group``, opened once (a metadata read) and kept in ``arrays``."""
    if name not in arrays:
        arrays[name] = array_at(group, name)
    return arrays[name]


def write_block(
    group: zarr.Group,
    block: int,
    *,
    start: int,
    n: int,
    pos_num: tuple[list[np.ndarray], list[np.ndarray]],
    values: dict[str, np.ndarray],
    writer: Callable[[zarr.Array], Callable[[int, np.ndarray], None]] | None = None,
    checksum: str = CHECKSUM,
    arrays: dict[str, zarr.Array] | None = None,
) -> None:
    """Write one block's samples (``values``: array path -> rows ``start:start + n``) with
    the digests of their chunks, its atoms to ``_pending/``, and mark the block done last.

    ``pos_num``: the block's atoms, per sample: positions (m, 3) float32 box Å and atomic
    numbers (m,). ``writer(array)`` gives the function that writes rows of an array
    (``put(start, rows)``; the build's :class:`~crystalgrid.store.ChunkWriter`); by default
    zarr writes them. ``arrays`` holds arrays of ``group`` already opened, by path (each
    opening reads metadata); the ones opened here are added to it.
    """
    arrays = {} if arrays is None else arrays

    def put(name: str, first: int, rows: np.ndarray) -> None:
        array = _opened(group, arrays, name)
        if writer is None:
            array[first : first + len(rows)] = rows
        else:
            writer(array)(first, rows)

    positions, numbers = pos_num
    for name, data in values.items():
        put(name, start, data)
        step = arrays[name].chunks[0]
        digests = [chunk_digest(data[j : j + step], checksum) for j in range(0, n, step)]
        put(f"checksums/{name}", start // step, np.array(digests, dtype=np.uint64))
    pos = np.concatenate(positions) if positions else np.zeros((0, 3), np.float32)
    num = np.concatenate(numbers).astype(np.uint8) if numbers else np.zeros(0, np.uint8)
    for name, data in (("position", pos.reshape(-1, 3)), ("number", num)):
        group.create_array(
            f"_pending/{name}_{block:06d}",
            shape=data.shape,
            chunks=(max(1, len(data)), *data.shape[1:]),
            dtype=data.dtype,
            compressors=compressor(),
            fill_value=0,
            config=_CONFIG,
            overwrite=True,
        )[...] = data
    # Last: the block counts only once all of it is written.
    put("_build/done", block, np.ones(1, dtype=np.uint8))


def finalize(group: zarr.Group, meta: StoreMeta, *, completed: str) -> StoreMeta:
    """Gather the pending atoms into the ragged ``atoms/`` arrays, digest the arrays written
    once, mark the store complete (``completed``: ISO 8601) and consolidate its metadata;
    return the complete attribute."""
    n_atoms = np.asarray(array_at(group, "samples/n_atoms")[:]).astype(np.int64)
    offset = np.concatenate([[0], np.cumsum(n_atoms)])
    total = int(offset[-1])
    position_schema, number_schema = array_schema("atoms/position"), array_schema("atoms/number")
    chunk = position_schema.rows  # ~100 KB of positions: cheap per sample
    positions = group.create_array(
        "atoms/position",
        shape=(total, 3),
        chunks=(chunk, 3),
        dtype=position_schema.dtype,
        dimension_names=dimension_names("atoms/position"),
        compressors=compressor(),
        fill_value=0,
        config=_CONFIG,
        overwrite=True,
    )
    numbers = group.create_array(
        "atoms/number",
        shape=(total,),
        chunks=(number_schema.rows,),
        dtype=number_schema.dtype,
        dimension_names=dimension_names("atoms/number"),
        compressors=compressor(),
        fill_value=0,
        config=_CONFIG,
        overwrite=True,
    )
    write_whole(group, "samples/atom_offset", offset)

    # Stream the blocks' atoms into whole chunks, never holding more than one chunk's worth.
    buf_pos: list[np.ndarray] = []
    buf_num: list[np.ndarray] = []
    written = 0

    def flush(final: bool) -> None:
        nonlocal buf_pos, buf_num, written
        pos = np.concatenate(buf_pos) if buf_pos else np.zeros((0, 3), np.float32)
        num = np.concatenate(buf_num) if buf_num else np.zeros(0, np.uint8)
        usable = len(num) if final else (len(num) // chunk) * chunk
        if usable:
            positions[written : written + usable] = pos[:usable]
            numbers[written : written + usable] = num[:usable]
            written += usable
        buf_pos, buf_num = [pos[usable:]], [num[usable:]]

    for block in range(meta.n_blocks or 0):
        buf_pos.append(np.asarray(array_at(group, f"_pending/position_{block:06d}")[...]))
        buf_num.append(np.asarray(array_at(group, f"_pending/number_{block:06d}")[...]))
        if sum(len(b) for b in buf_num) >= chunk:
            flush(final=False)
    flush(final=True)
    if written != total:
        raise RuntimeError(f"gathered {written} atoms, expected {total}")
    for name in ("atoms/position", "atoms/number", "samples/atom_offset"):
        checksum_whole_array(group, name, checksum=meta.checksum)
    for name in ("crystals", "rejects"):
        for path in arrays_under(group_at(group, name), name):
            checksum_whole_array(group, path, checksum=meta.checksum)
    meta = meta.completed_at(completed, n_atoms=total)
    meta.write(group)
    with contextlib.suppress(KeyError):
        del group["_pending"]
    consolidate(group)
    return meta


def consolidate(group: zarr.Group) -> None:
    """Copy every array's metadata into the group's own zarr.json, so that a reader (zarr,
    xarray) opens the whole store with one read; each array keeps its zarr.json too."""
    with warnings.catch_warnings():
        # zarr notes that consolidated metadata is not yet part of the Zarr 3 specification;
        # zarr-python and xarray read it, and other readers read each array's zarr.json.
        warnings.filterwarnings(
            "ignore", message="Consolidated metadata is currently not part", category=UserWarning
        )
        zarr.consolidate_metadata(group.store, path=group.path)
