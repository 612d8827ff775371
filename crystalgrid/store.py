"""The Zarr layout of a crystalgrid dataset: its schema, metadata, checksums and verification.

One Zarr 3 group per representation (``single.zarr``, ``repeated.zarr``). :data:`SCHEMA` lists
every array (path, shape, dtype, chunking, when it is checksummed); the builder creates the
arrays from it, :func:`verify` checks the ones it marks, and docs/store-format.md shows it as
a table (:func:`schema_table`; a test keeps the two equal). Everything else (grid spec,
representation, seed, provenance, licence, splits, fingerprint, state) is in the group's
``crystalgrid`` attribute (:func:`read_meta`). Samples are stored crystal by crystal with the
crystals ordered by split, so each split is one contiguous range of samples.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from crystalgrid.errors import CrystalgridError, RemoteStorageError, first_line
from crystalgrid.remote import (
    is_url,
    remote_errors,
    remote_options,
    remote_reason,
    store_key,
)
from crystalgrid.splits import SPLITS

__all__ = [
    "ATTR",
    "BLOCK_ARRAYS",
    "BUFFER_PROTOTYPE",
    "CHECKSUM",
    "CHECKSUMS",
    "CODECS",
    "FORMAT",
    "LEGACY_CHECKSUM",
    "LEGACY_DENSITY_METHOD",
    "SCHEMA",
    "SPLITS",
    "ArraySchema",
    "StoreMeta",
    "VerifyReport",
    "array_schema",
    "arrays_under",
    "blocks_done",
    "checksum_whole_array",
    "chunk_digest",
    "chunk_key",
    "chunk_slices",
    "compressor",
    "consolidate",
    "create_sample_arrays",
    "dimension_names",
    "finalize",
    "has_named_dimensions",
    "is_url",
    "open_array",
    "open_group",
    "open_store",
    "read_crystals",
    "read_error",
    "read_meta",
    "read_rows",
    "remote_options",
    "schema_table",
    "store_checksum",
    "upgrade",
    "verify",
    "whole_blosc_frame",
    "write_block",
    "write_whole",
]

FORMAT = "crystalgrid-store/1"
ATTR = "crystalgrid"
#: The density evaluation of stores without a ``density_method`` attribute (built before it
#: was recorded): matrix products of the atoms' full per-axis factors.
LEGACY_DENSITY_METHOD = "separable/1"
#: The chunk digest of stores without a ``checksum`` attribute (built before it was recorded).
LEGACY_CHECKSUM = "blake2b-64"
#: zarr's default buffers, for reading and writing store keys directly.
BUFFER_PROTOTYPE = default_buffer_prototype()


@dataclass(frozen=True)
class ArraySchema:
    """One array of the store.

    Attributes:
        path: its path in the group (``<name>`` stands for any name).
        shape: the shape in words: ``n`` samples, ``B`` bins, ``m`` atoms, ``c`` crystals,
            ``s`` sites, ``r`` rejects.
        dtype: a numpy dtype name, ``"str"`` (variable-length strings), or ``"density"``
            (the build's ``dtype``: float32 or float16).
        chunk: samples (rows) per chunk: a number, ``"grid"`` (the build's
            ``chunk_samples``) or ``"block"`` (one build block's samples).
        checksum: ``"block"`` (each chunk digested by the block that writes it) or
            ``"final"`` (digested when the build finalises).
        notes: what it holds.
        dims: the names of its dimensions (Zarr's ``dimension_names``, what xarray reads).
    """

    path: str
    shape: str
    dtype: str
    chunk: int | str
    checksum: str
    notes: str
    dims: tuple[str, ...] = ()

    @property
    def tail(self) -> tuple[int, ...]:
        """The fixed trailing dimensions (``(4, 4)`` for ``(n, 4, 4)``; grids have none)."""
        dims = [d.strip() for d in self.shape.strip("()").split(",")[1:] if d.strip()]
        return tuple(int(d) for d in dims) if all(d.isdigit() for d in dims) else ()


#: Every array of a ``crystalgrid-store/1`` group, in the order of docs/store-format.md.
SCHEMA: tuple[ArraySchema, ...] = (
    ArraySchema(
        "density",
        "(n, B, B, B)",
        "density",
        "grid",
        "block",
        "electrons per Å^3; blosc lz4 + shuffle by default",
        dims=("sample", "x", "y", "z"),
    ),
    ArraySchema(
        "species",
        "(n, B, B, B)",
        "uint8",
        "grid",
        "block",
        "atomic number of the nearest ground-truth atom (inside the box) within the "
        "species radius, else 0; blosc zstd",
        dims=("sample", "x", "y", "z"),
    ),
    ArraySchema(
        "samples/crystal",
        "(n,)",
        "int32",
        "block",
        "block",
        "index into `crystals/`",
        dims=("sample",),
    ),
    ArraySchema(
        "samples/material_id", "(n,)", "str", "block", "block", "the crystal's id", dims=("sample",)
    ),
    ArraySchema(
        "samples/split",
        "(n,)",
        "uint8",
        "block",
        "block",
        "0 train, 1 val, 2 test",
        dims=("sample",),
    ),
    ArraySchema(
        "samples/transform",
        "(n, 4, 4)",
        "float64",
        "block",
        "block",
        "crystal Cartesian Å -> box Å",
        dims=("sample", "row", "column"),
    ),
    ArraySchema(
        "samples/n_atoms",
        "(n,)",
        "int32",
        "block",
        "block",
        "ground-truth atoms inside the box",
        dims=("sample",),
    ),
    ArraySchema(
        "samples/n_outside",
        "(n,)",
        "int32",
        "block",
        "block",
        "`single`: cell atoms outside the box; 0 for `repeated`",
        dims=("sample",),
    ),
    ArraySchema(
        "samples/atom_offset",
        "(n + 1,)",
        "int64",
        1 << 16,
        "final",
        "atoms of sample s: `atom_offset[s]:atom_offset[s+1]`",
        dims=("sample_edge",),
    ),
    ArraySchema(
        "atoms/position",
        "(m, 3)",
        "float32",
        1 << 13,
        "final",
        "box Å, atoms inside `[0, side)^3`",
        dims=("atom", "axis"),
    ),
    ArraySchema(
        "atoms/number", "(m,)", "uint8", 1 << 13, "final", "atomic numbers", dims=("atom",)
    ),
    ArraySchema("crystals/material_id", "(c,)", "str", 4096, "final", "", dims=("crystal",)),
    ArraySchema(
        "crystals/split",
        "(c,)",
        "uint8",
        4096,
        "final",
        "the split of each crystal",
        dims=("crystal",),
    ),
    ArraySchema(
        "crystals/source_index",
        "(c,)",
        "int64",
        4096,
        "final",
        "position of the crystal in the source, among those kept",
        dims=("crystal",),
    ),
    ArraySchema(
        "crystals/lattice",
        "(c, 3, 3)",
        "float64",
        4096,
        "final",
        "rows are lattice vectors, Å",
        dims=("crystal", "vector", "axis"),
    ),
    ArraySchema(
        "crystals/site_offset",
        "(c + 1,)",
        "int64",
        4096,
        "final",
        "ragged index into `frac` / `number`",
        dims=("crystal_edge",),
    ),
    ArraySchema(
        "crystals/frac",
        "(s, 3)",
        "float64",
        1 << 16,
        "final",
        "fractional coordinates as given by the source",
        dims=("site", "axis"),
    ),
    ArraySchema(
        "crystals/number", "(s,)", "uint8", 1 << 16, "final", "atomic numbers", dims=("site",)
    ),
    ArraySchema(
        "crystals/properties/<name>",
        "(c,)",
        "float64",
        4096,
        "final",
        "numeric properties of the source (NaN if missing)",
        dims=("crystal",),
    ),
    ArraySchema(
        "rejects/material_id",
        "(r,)",
        "str",
        4096,
        "final",
        "every structure left out",
        dims=("reject",),
    ),
    ArraySchema(
        "rejects/reason", "(r,)", "str", 4096, "final", "a stable word (below)", dims=("reject",)
    ),
    ArraySchema("rejects/detail", "(r,)", "str", 4096, "final", "a sentence", dims=("reject",)),
)
# (Also in every store: ``checksums/<array path>`` (chunks,) uint64, the digest of each
# chunk's values (:data:`CHECKSUM`), and ``_build/done`` (blocks,) uint8, build bookkeeping.)

#: Arrays whose every chunk is checksummed when it is written by a block.
BLOCK_ARRAYS = tuple(a.path for a in SCHEMA if a.checksum == "block")


def array_schema(path: str) -> ArraySchema:
    """The schema entry of an array path (``crystals/properties/x`` matches ``<name>``).

    Raises:
        KeyError: for a path the format does not have.
    """
    for entry in SCHEMA:
        if entry.path == path:
            return entry
        prefix, placeholder, rest = entry.path.partition("<name>")
        if placeholder and not rest and path.startswith(prefix) and "/" not in path[len(prefix) :]:
            return entry
    raise KeyError(f"{path!r} is not an array of {FORMAT}")


def dimension_names(path: str) -> tuple[str, ...]:
    """The dimension names of any array of a finished store: :data:`SCHEMA`'s, then
    ``checksums/.../<name>`` -> ``("<name>_chunk",)`` and ``_build/done`` -> ``("block",)``.

    Raises:
        KeyError: for a path the format does not have.
    """
    if path.startswith("checksums/"):
        return (f"{path.rsplit('/', 1)[-1]}_chunk",)
    if path == "_build/done":
        return ("block",)
    return array_schema(path).dims


def schema_table() -> str:
    """:data:`SCHEMA` as the markdown table of docs/store-format.md."""
    dtypes = {"density": "float32 or float16", "str": "string"}
    chunks = {"grid": "(chunk_samples, B, B, B)", "block": "block"}
    lines = ["| path | shape | dtype | chunks | checksummed | notes |", "|---|---|---|---|---|---|"]
    for a in SCHEMA:
        chunk = chunks[a.chunk] if isinstance(a.chunk, str) else f"{a.chunk:,}"
        when = "as written" if a.checksum == "block" else "at the end"
        lines.append(
            f"| `{a.path}` | {a.shape} | {dtypes.get(a.dtype, a.dtype)} | {chunk} | {when} "
            f"| {a.notes} |"
        )
    return "\n".join(lines) + "\n"


CODECS = ("lz4", "zstd", "lz4hc")


def compressor(cname: str = "zstd", level: int = 5) -> BloscCodec:
    """Blosc with byte shuffle; ``cname`` one of :data:`CODECS`.

    The build's defaults (docs/benchmarks.md has the measurements): lz4 for the density
    (about 10% larger than zstd but several times faster to write and ~1.5x faster to
    read), zstd for everything else (species grids compress ~150x).
    """
    if cname not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {cname!r}")
    return BloscCodec(cname=cname, clevel=level, shuffle="shuffle")


#: Whether :func:`_freeze_for_fork` is registered, and whether it froze the collector now.
_FORKS = {"registered": False, "froze": False}


def _freeze_for_fork() -> None:
    if gc.get_freeze_count() == 0:  # the caller's own gc.freeze() is left as it is
        gc.freeze()
        _FORKS["froze"] = True


def _unfreeze_after_fork() -> None:
    if _FORKS["froze"]:
        _FORKS["froze"] = False
        gc.unfreeze()


def _guard_forks() -> None:
    """Once a store is opened by URL: a process forked from this one (a DataLoader worker)
    never collects what it inherited. The remote filesystems among that, and any dropped ones
    not yet collected, hold connections of this process's event loop: collected in the child,
    where that loop does not run, each would be reported as an "Unclosed client session"
    (``gc.freeze`` around the fork, as Python's documentation suggests for forked workers)."""
    if not _FORKS["registered"] and hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=_freeze_for_fork,
            after_in_parent=_unfreeze_after_fork,
            after_in_child=_unfreeze_after_fork_in_child,
        )
        _FORKS["registered"] = True


def _unfreeze_after_fork_in_child() -> None:
    _FORKS["froze"] = False  # the child keeps what it inherited frozen


def open_group(
    location: str | os.PathLike[str],
    *,
    mode: str = "r",
    storage_options: dict[str, Any] | None = None,
    consolidated: bool | None = None,
) -> zarr.Group:
    """Open the group at a local path or an fsspec URL (``s3://bucket/x.zarr``).

    Credentials for URLs come from the usual environment (e.g. ``AWS_ACCESS_KEY_ID``,
    ``AWS_ENDPOINT_URL``) or ``storage_options``; none are stored. ``consolidated=False``
    reads each array's own zarr.json rather than the group's consolidated copy.
    """
    if is_url(location):
        _guard_forks()
        with remote_errors(location):
            return zarr.open_group(
                str(location),
                mode=mode,
                storage_options=remote_options(location, storage_options),
                use_consolidated=consolidated,
            )
    return zarr.open_group(os.fspath(location), mode=mode, use_consolidated=consolidated)


def open_store(
    location: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    consolidated: bool | None = None,
) -> tuple[zarr.Group, dict[str, Any]]:
    """Open a crystalgrid store read-only: its group and its ``crystalgrid`` attribute
    (``consolidated`` as in :func:`open_group`).

    Raises:
        CrystalgridError: nothing at ``location``, or a group that is not a crystalgrid store.
    """
    try:
        group = open_group(
            location, mode="r", storage_options=storage_options, consolidated=consolidated
        )
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise CrystalgridError(f"no dataset at {location}") from exc
    except METADATA_ERRORS as exc:
        raise CrystalgridError(
            f"{location}: the store's zarr.json is damaged ({first_line(exc)}); restore it or "
            "build the store again"
        ) from None
    return group, read_meta(group)


#: What zarr raises for a metadata document (``zarr.json``) that is cut short or not JSON.
METADATA_ERRORS = (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError)


def open_array(group: zarr.Group, name: str, location: str) -> zarr.Array:
    """Array ``name`` of a store.

    Raises:
        CrystalgridError: its metadata is missing or damaged (one line; ``verify`` lists all).
    """
    try:
        return group[name]
    except METADATA_ERRORS as exc:
        raise CrystalgridError(
            f"{location}: the metadata of {name} is missing or damaged ({first_line(exc)}); "
            "run crystalgrid verify, then restore or rebuild the store"
        ) from None


def read_rows(array: zarr.Array, selection: Any, location: str) -> np.ndarray:
    """``array[selection]``.

    Raises:
        CrystalgridError: a chunk does not decode (truncated or corrupted), in one line.
    """
    try:
        return array[selection]
    except CrystalgridError:
        raise
    except Exception as exc:  # noqa: BLE001 - a codec's failure: any exception type
        raise read_error(exc, array.path, location) from None


def read_error(
    exc: BaseException, path: str, location: str, keys: Sequence[str] = ()
) -> CrystalgridError:
    """The one-line error for a failed read of array ``path``: a remote-storage failure
    (naming the first of the chunk ``keys`` read, or the array), or a chunk that does not
    decode."""
    reason = remote_reason(exc) if is_url(location) else None
    if reason is not None:
        what = f"{keys[0]}" + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")
        return RemoteStorageError(f"{location}: {reason} (reading {what or path})")
    return CrystalgridError(
        f"{location}: a chunk of {path} does not decode ({first_line(exc)}); "
        "run crystalgrid verify, then restore or rebuild the store"
    )


@dataclass(frozen=True)
class StoreMeta:
    """The ``crystalgrid`` attribute of a store, typed (docs/store-format.md, "Attributes").

    Built by :meth:`from_attrs` from the stored dict, which stays the source of truth (the
    builder writes it in stages: counts appear once the crystals are scanned, ``n_atoms`` and
    ``completed`` at the end). Counts are ``None`` until known.
    """

    format: str
    state: str
    representation: str
    grid: dict[str, Any]
    seed: int
    samples_per_crystal: int
    rotate: bool | None
    split_fractions: tuple[float, ...]
    config: dict[str, Any]
    source: dict[str, Any]
    source_fingerprint: str
    fingerprint: str
    licence: str | None
    citation: str | None
    crystalgrid_version: str
    created: str
    splits: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    rejects: dict[str, int] = field(default_factory=dict)
    properties: tuple[str, ...] = ()
    n_crystals: int | None = None
    n_samples: int | None = None
    n_atoms: int | None = None
    n_blocks: int | None = None
    block_crystals: int | None = None
    completed: str | None = None
    #: The digest of ``checksums/`` (absent from stores that predate it: BLAKE2b-64).
    checksum: str = LEGACY_CHECKSUM
    #: How the density was evaluated (absent from stores that predate it: matrix products of the
    #: full factors); see :data:`crystalgrid.grids.numpy_backend.DENSITY_METHOD`.
    density_method: str = LEGACY_DENSITY_METHOD

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> StoreMeta:
        """Type the stored attribute (unknown keys are ignored, for newer writers).

        Raises:
            CrystalgridError: when a key every store has is missing.
        """
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in attrs.items() if k in names}
        values["split_fractions"] = tuple(values.get("split_fractions", ()))
        values["properties"] = tuple(values.get("properties", ()))
        try:
            return cls(**values)
        except TypeError as exc:
            raise CrystalgridError(f"the store's attributes are incomplete: {exc}") from None

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    def split_range(self, name: str, unit: str = "samples") -> tuple[int, int]:
        """``(start, stop)`` of a split in ``"samples"`` or ``"crystals"``."""
        start, stop = self.splits[name][unit]
        return int(start), int(stop)


def read_meta(group: zarr.Group) -> dict[str, Any]:
    """The ``crystalgrid`` attribute of a store.

    Raises:
        CrystalgridError: when the group is not a crystalgrid store.
    """
    meta = group.attrs.get(ATTR)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CrystalgridError(f"{group.store_path} is not a crystalgrid dataset ({FORMAT})")
    return meta


#: The digests a store's ``checksums/`` can hold, named by its ``checksum`` attribute.
CHECKSUMS = ("crc32", "blake2b-64")
#: What new stores use: CRC-32 runs ~5x faster than BLAKE2b here and detects damage as well
#: (it is not meant to resist tampering).
CHECKSUM = "crc32"


def store_checksum(meta: dict[str, Any]) -> str:
    """The digest a store's ``checksums/`` hold (``blake2b-64`` for stores that predate the
    ``checksum`` attribute)."""
    return str(meta.get("checksum", LEGACY_CHECKSUM))


def chunk_digest(data: np.ndarray, checksum: str = CHECKSUM) -> int:
    """The digest of an array's values (C order) as an unsigned integer: ``"crc32"`` or
    ``"blake2b-64"`` (:data:`CHECKSUMS`).

    Raises:
        CrystalgridError: for another digest name (a store written by a newer crystalgrid).
    """
    if data.dtype.kind in "OUT":  # strings: digest their UTF-8 with separators
        payload = "\x1f".join(str(x) for x in np.asarray(data).reshape(-1)).encode()
    else:
        # The array's bytes, without a copy (reshape(-1) of a contiguous array is a view).
        payload = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if checksum == "crc32":
        return zlib.crc32(payload)
    if checksum == "blake2b-64":
        return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little")
    raise CrystalgridError(
        f"unknown chunk checksum {checksum!r} (this crystalgrid knows {', '.join(CHECKSUMS)}); "
        "upgrade crystalgrid"
    )


def chunk_slices(array: zarr.Array, index: int) -> tuple[slice, ...]:
    """The region of chunk ``index`` along axis 0 (arrays here are chunked on axis 0 only)."""
    step = array.chunks[0]
    start = index * step
    rest = tuple(slice(0, n) for n in array.shape[1:])
    return (slice(start, min(start + step, array.shape[0])), *rest)


def chunk_key(array: zarr.Array, index: int) -> str:
    """The store key of chunk ``index`` along axis 0 (default v3 chunk-key encoding)."""
    zeros = "/".join("0" for _ in array.shape[1:])
    return f"{array.path}/c/{index}" + (f"/{zeros}" if zeros else "")


def checksum_whole_array(group: zarr.Group, name: str, *, checksum: str = CHECKSUM) -> None:
    """Digest every chunk of ``name`` now (arrays written once at the end of a build)."""
    array = group[name]
    digests = [
        chunk_digest(array[chunk_slices(array, i)], checksum) for i in range(array.cdata_shape[0])
    ]
    target = group.require_array(
        f"checksums/{name}",
        shape=(len(digests),),
        chunks=(max(1, len(digests)),),
        dtype="uint64",
        fill_value=0,
        config={"write_empty_chunks": True},
        dimension_names=dimension_names(f"checksums/{name}"),
    )
    if len(digests):
        target[:] = np.array(digests, dtype=np.uint64)


def write_whole(group: zarr.Group, name: str, data: np.ndarray) -> None:
    """Write ``data`` whole as array ``name``, chunked as :data:`SCHEMA` says (at most the
    array's length)."""
    chunk = max(1, min(array_schema(name).chunk, len(data)))
    array = group.create_array(
        name,
        shape=data.shape,
        chunks=(chunk, *data.shape[1:]),
        dtype=data.dtype if data.dtype.kind != "U" else str,
        compressors=compressor(),
        fill_value=None if data.dtype.kind == "U" else 0,
        config={"write_empty_chunks": True},
        overwrite=True,
        dimension_names=dimension_names(name),
    )
    if data.size:
        array[...] = data


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
    grid_chunks = (chunk_samples, bins, bins, bins)
    common = {
        "compressors": compressor(),
        "fill_value": 0,
        "config": {"write_empty_chunks": True},
        "overwrite": True,
    }
    group.create_array(
        "density",
        shape=(n_samples, bins, bins, bins),
        chunks=grid_chunks,
        dtype=dtype,
        dimension_names=dimension_names("density"),
        **{**common, "compressors": density_compressor},
    )
    group.create_array(
        "species",
        shape=(n_samples, bins, bins, bins),
        chunks=grid_chunks,
        dtype=array_schema("species").dtype,
        dimension_names=dimension_names("species"),
        **common,
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
                config={"write_empty_chunks": True},
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
                **common,
            )
    for name in BLOCK_ARRAYS:
        n_chunks = group[name].cdata_shape[0]
        per_block = block // group[name].chunks[0]
        group.create_array(
            f"checksums/{name}",
            shape=(n_chunks,),
            chunks=(per_block,),
            dtype="uint64",
            dimension_names=dimension_names(f"checksums/{name}"),
            **common,
        )
    group.create_array(
        "_build/done",
        shape=(n_blocks,),
        chunks=(1,),
        dtype="uint8",
        dimension_names=dimension_names("_build/done"),
        **common,
    )
    group.create_group("_pending", overwrite=True)


def blocks_done(group: zarr.Group) -> np.ndarray:
    """``(blocks,)`` uint8: 1 for each build block whose samples are all written."""
    return group["_build/done"][:]


def read_crystals(
    group: zarr.Group, first: int, last: int, arrays: dict[str, zarr.Array] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Crystals ``first:last`` as stored (``last`` clipped to the store): site offsets
    ``(k + 1,)`` (absolute), fractional sites ``(sites, 3)``, atomic numbers, lattices
    ``(k, 3, 3)`` Å, material ids, splits. ``arrays``: as for :func:`write_block`."""
    arrays = {} if arrays is None else arrays

    def array(name: str) -> zarr.Array:
        return _opened(group, arrays, name)

    last = min(last, array("crystals/material_id").shape[0])
    offsets = array("crystals/site_offset")[first : last + 1]
    frac = array("crystals/frac")[offsets[0] : offsets[-1]]
    number = array("crystals/number")[offsets[0] : offsets[-1]]
    lattice = array("crystals/lattice")[first:last]
    ids = array("crystals/material_id")[first:last]
    split = array("crystals/split")[first:last]
    return offsets, frac, number, lattice, ids, split


def _opened(group: zarr.Group, arrays: dict[str, zarr.Array], name: str) -> zarr.Array:
    """Array ``name`` of ``group``, opened once (a metadata read) and kept in ``arrays``."""
    if name not in arrays:
        arrays[name] = group[name]
    return arrays[name]


def write_block(
    group: zarr.Group,
    block: int,
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

    ``writer(array)`` gives the function that writes rows of an array (``put(start, rows)``;
    the build's :class:`~crystalgrid.chunk_io.ChunkWriter`); by default zarr writes them.
    ``arrays`` holds arrays of ``group`` already opened, by path (each opening reads
    metadata); the ones opened here are added to it.
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
            config={"write_empty_chunks": True},
            overwrite=True,
        )[...] = data
    # Last: the block counts only once all of it is written.
    put("_build/done", block, np.ones(1, dtype=np.uint8))


def finalize(group: zarr.Group, meta: dict[str, Any], *, completed: str) -> None:
    """Gather the pending atoms into the ragged ``atoms/`` arrays; mark complete."""
    n_atoms = group["samples/n_atoms"][:].astype(np.int64)
    offset = np.concatenate([[0], np.cumsum(n_atoms)])
    total = int(offset[-1])
    chunk = array_schema("atoms/position").chunk  # ~100 KB of positions: cheap per sample
    common = {
        "compressors": compressor(),
        "fill_value": 0,
        "config": {"write_empty_chunks": True},
        "overwrite": True,
    }
    positions = group.create_array(
        "atoms/position",
        shape=(total, 3),
        chunks=(chunk, 3),
        dtype=array_schema("atoms/position").dtype,
        dimension_names=dimension_names("atoms/position"),
        **common,
    )
    numbers = group.create_array(
        "atoms/number",
        shape=(total,),
        chunks=(array_schema("atoms/number").chunk,),
        dtype=array_schema("atoms/number").dtype,
        dimension_names=dimension_names("atoms/number"),
        **common,
    )
    write_whole(group, "samples/atom_offset", offset)

    # Stream the blocks' atoms into whole chunks, never holding more than one chunk's worth.
    buf_pos, buf_num, written = [], [], 0

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

    for block in range(meta["n_blocks"]):
        buf_pos.append(group[f"_pending/position_{block:06d}"][...])
        buf_num.append(group[f"_pending/number_{block:06d}"][...])
        if sum(len(b) for b in buf_num) >= chunk:
            flush(final=False)
    flush(final=True)
    if written != total:
        raise RuntimeError(f"gathered {written} atoms, expected {total}")
    checksum = store_checksum(meta)
    for name in ("atoms/position", "atoms/number", "samples/atom_offset"):
        checksum_whole_array(group, name, checksum=checksum)
    for name in ("crystals", "rejects"):
        for path in arrays_under(group[name], name):
            checksum_whole_array(group, path, checksum=checksum)
    meta = dict(meta, state="complete", n_atoms=total, completed=completed)
    group.attrs[ATTR] = meta
    with contextlib.suppress(KeyError):
        del group["_pending"]
    consolidate(group)


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


def has_named_dimensions(group: zarr.Group) -> bool:
    """Whether the store's arrays carry dimension names (stores built before they were
    added need ``crystalgrid upgrade``)."""
    return group["density"].metadata.dimension_names is not None


def upgrade(
    location: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Give a finished store built before named dimensions its ``dimension_names`` and
    consolidated metadata, in place. Only metadata documents are rewritten (chunks, and so
    checksums and ``verify``, are untouched); a store that has both is left as it is.

    Returns:
        The paths of the arrays that got dimension names.

    Raises:
        CrystalgridError: no finished crystalgrid store there.
    """
    with remote_errors(location):
        _, meta = open_store(location, storage_options=storage_options)
        if meta.get("state") != "complete":
            raise CrystalgridError(
                f"{location} is an unfinished build; run the same crystalgrid build command "
                "to complete it (finished stores have named dimensions)"
            )
        group = open_group(location, mode="r+", storage_options=storage_options)
        consolidated = group.metadata.consolidated_metadata is not None
        changed = []
        base = group.path.strip("/")
        try:
            paths = [p.lstrip("/") for p in arrays_under(group, "")]
        except METADATA_ERRORS as exc:
            raise CrystalgridError(
                f"{location}: damaged metadata ({first_line(exc)}); run crystalgrid verify, "
                "then restore or rebuild the store"
            ) from None
        for path in paths:
            key = store_key(base, f"{path}/zarr.json")
            try:
                document = json.loads(
                    sync(group.store.get(key, prototype=BUFFER_PROTOTYPE)).to_bytes()
                )
            except (*METADATA_ERRORS, AttributeError) as exc:  # AttributeError: no document
                raise CrystalgridError(
                    f"{location}: the metadata of {path} is missing or damaged "
                    f"({first_line(exc)}); run crystalgrid verify, then restore or rebuild "
                    "the store"
                ) from None
            if document.get("dimension_names") is None:
                document["dimension_names"] = list(dimension_names(path))
                payload = json.dumps(document, indent=2).encode()
                sync(group.store.set(key, BUFFER_PROTOTYPE.buffer.from_bytes(payload)))
                changed.append(path)
        if changed or not consolidated:
            consolidate(open_group(location, mode="r+", storage_options=storage_options))
        return changed


def arrays_under(group: zarr.Group, prefix: str) -> list[str]:
    """Paths (``prefix/...``) of every array under ``group``."""
    out = []
    for name, node in group.members():
        if isinstance(node, zarr.Group):
            out.extend(arrays_under(node, f"{prefix}/{name}"))
        else:
            out.append(f"{prefix}/{name}")
    return out


@dataclass
class VerifyReport:
    """What :func:`verify` found: ``problems`` is empty for a sound store."""

    location: str
    chunks_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def whole_blosc_frame(raw: bytes | memoryview) -> bool:
    """Whether ``raw`` is as long as the compressed size its Blosc header states (every
    array of the store ends in Blosc). A frame cut short fails; one of the right length
    is left to decoding and the checksum."""
    if len(raw) < 16:
        return False
    return int.from_bytes(raw[12:16], "little") == len(raw)


def _checksummed_arrays(group: zarr.Group) -> list[str]:
    names: list[str] = []

    def walk(g: zarr.Group, prefix: str) -> None:
        for name, node in g.members():
            path = f"{prefix}{name}"
            if isinstance(node, zarr.Group):
                walk(node, path + "/")
            else:
                names.append(path)

    walk(group["checksums"], "")
    return sorted(names)


def verify(
    location: str | os.PathLike[str], *, storage_options: dict | None = None
) -> VerifyReport:
    """Check that every chunk of every array is present and matches its recorded checksum.

    A missing chunk would otherwise read back silently as zeros, so presence is checked in
    the store itself; a chunk that no longer decodes, or decodes to other values, is
    reported as corrupted.
    """
    with remote_errors(location):
        return _verify(location, storage_options)


def _verify(location: str | os.PathLike[str], storage_options: dict | None) -> VerifyReport:
    report = VerifyReport(location=str(location))
    # Each array's own zarr.json, as every Zarr reader can read it (not the consolidated copy).
    group, meta = open_store(location, storage_options=storage_options, consolidated=False)
    if meta.get("state") != "complete":
        report.problems.append(f"the build is not complete (state: {meta.get('state')})")
        return report
    store = group.store
    fs = getattr(store, "fs", None)
    if fs is not None:  # an fsspec store: look at the objects now, not at cached listings
        fs.invalidate_cache()
    base = group.path.strip("/")
    try:
        names = _checksummed_arrays(group)
    except METADATA_ERRORS as exc:
        report.problems.append(f"damaged metadata under checksums/ ({first_line(exc)})")
        return report
    checksum = store_checksum(meta)
    for name in names:
        try:
            array = group[name]
            recorded = group[f"checksums/{name}"][:]
        except METADATA_ERRORS as exc:
            report.problems.append(f"damaged metadata {name}/zarr.json ({first_line(exc)})")
            continue
        for index in range(array.cdata_shape[0]):
            report.chunks_checked += 1
            key = chunk_key(array, index)
            try:
                raw = sync(store.get(store_key(base, key), prototype=BUFFER_PROTOTYPE))
            except Exception as exc:  # re-raised unless remote
                _raise_if_remote(exc, name, str(location), key)
                raise
            if raw is None:
                report.problems.append(f"missing chunk {key}")
                continue
            if not whole_blosc_frame(raw.to_bytes()):
                # Not decoded: Blosc reads past the end of a cut frame (it can crash).
                report.problems.append(f"corrupted chunk {key} (truncated)")
                continue
            try:
                data = array[chunk_slices(array, index)]
            except Exception as exc:  # noqa: BLE001 - any decoding failure means corruption
                _raise_if_remote(exc, name, str(location), key)  # but an endpoint's is not
                report.problems.append(f"corrupted chunk {key} ({type(exc).__name__})")
                continue
            if chunk_digest(data, checksum) != int(recorded[index]):
                report.problems.append(f"corrupted chunk {key} (checksum mismatch)")
    return report


def _raise_if_remote(exc: BaseException, path: str, location: str, key: str) -> None:
    """Raise the one-line :class:`~crystalgrid.errors.RemoteStorageError` naming ``key`` when
    ``exc`` is a remote-storage failure (the endpoint went away, stalled, refused)."""
    error = read_error(exc, path, location, [key])
    if isinstance(error, RemoteStorageError):
        raise error from None
