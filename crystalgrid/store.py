"""The Zarr layout of a crystalgrid dataset: create, write, checksum, verify.

One Zarr 3 group per representation (``single.zarr``, ``repeated.zarr``)::

    density            (n, B, B, B)  float32 | float16   chunks (chunk_samples, B, B, B)
    species            (n, B, B, B)  uint8               same chunks
    samples/crystal    (n,)          int32     index into crystals/
    samples/material_id(n,)          str
    samples/split      (n,)          uint8     0 train, 1 val, 2 test
    samples/transform  (n, 4, 4)     float64   crystal Cartesian Å -> box Å
    samples/n_atoms    (n,)          int32     ground-truth atoms in the box
    samples/n_outside  (n,)          int32     cell atoms outside the box (single)
    samples/atom_offset(n + 1,)      int64     atoms of sample i: atom_offset[i]:atom_offset[i+1]
    atoms/position     (m, 3)        float32   box Å
    atoms/number       (m,)          uint8     atomic number
    crystals/...                     the source structures (lattice, fractional sites, Z, id,
                                     split, numeric properties): any sample can be recomputed
    rejects/...                      id, reason, detail of every structure left out
    checksums/<array>  (chunks,)     uint64    digest of each chunk's data, taken when written
    _build/done        (blocks,)     uint8     1 once a block's chunks are all written

Everything else (grid spec, representation, seed, provenance, licence, splits, fingerprint,
state) is in the group's ``crystalgrid`` attribute. Samples are stored crystal by crystal with
the crystals ordered by split, so each split is one contiguous range of samples.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.core.sync import sync

from crystalgrid.errors import CrystalgridError

__all__ = [
    "FORMAT",
    "SPLITS",
    "VerifyReport",
    "chunk_digest",
    "compressor",
    "open_group",
    "read_meta",
    "verify",
]

FORMAT = "crystalgrid-store/1"
ATTR = "crystalgrid"
SPLITS = ("train", "val", "test")
#: Arrays whose every chunk is checksummed when it is written by a block.
BLOCK_ARRAYS = (
    "density",
    "species",
    "samples/crystal",
    "samples/material_id",
    "samples/split",
    "samples/transform",
    "samples/n_atoms",
    "samples/n_outside",
)


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


def is_url(location: str | os.PathLike[str]) -> bool:
    """True for ``s3://...`` and other fsspec URLs; False for local paths."""
    return "://" in str(location) and not str(location).startswith("file://")


def open_group(
    location: str | os.PathLike[str],
    *,
    mode: str = "r",
    storage_options: dict[str, Any] | None = None,
) -> zarr.Group:
    """Open the group at a local path or an fsspec URL (``s3://bucket/x.zarr``).

    Credentials for URLs come from the usual environment (e.g. ``AWS_ACCESS_KEY_ID``,
    ``AWS_ENDPOINT_URL``) or ``storage_options``; none are stored.
    """
    if is_url(location):
        return zarr.open_group(str(location), mode=mode, storage_options=storage_options or {})
    return zarr.open_group(os.fspath(location), mode=mode)


def open_store(
    location: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
) -> tuple[zarr.Group, dict[str, Any]]:
    """Open a crystalgrid store read-only: its group and its ``crystalgrid`` attribute.

    Raises:
        CrystalgridError: nothing at ``location``, or a group that is not a crystalgrid store.
    """
    try:
        group = open_group(location, mode="r", storage_options=storage_options)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise CrystalgridError(f"no dataset at {location}") from exc
    return group, read_meta(group)


def read_meta(group: zarr.Group) -> dict[str, Any]:
    """The ``crystalgrid`` attribute of a store.

    Raises:
        CrystalgridError: when the group is not a crystalgrid store.
    """
    meta = group.attrs.get(ATTR)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CrystalgridError(f"{group.store_path} is not a crystalgrid dataset ({FORMAT})")
    return meta


def chunk_digest(data: np.ndarray) -> int:
    """64-bit BLAKE2b digest of an array's values (C order), as an unsigned integer."""
    if data.dtype.kind in "OUT":  # strings: digest their UTF-8 with separators
        payload = "\x1f".join(str(x) for x in np.asarray(data).reshape(-1)).encode()
    else:
        payload = np.ascontiguousarray(data).tobytes()
    digest = hashlib.blake2b(payload, digest_size=8).digest()
    return int.from_bytes(digest, "little")


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


def write_checksums(group: zarr.Group, name: str, first_chunk: int, digests: list[int]) -> None:
    """Record the digests of chunks ``first_chunk ...`` of array ``name``."""
    group[f"checksums/{name}"][first_chunk : first_chunk + len(digests)] = np.array(
        digests, dtype=np.uint64
    )


def checksum_whole_array(group: zarr.Group, name: str) -> None:
    """Digest every chunk of ``name`` now (arrays written once at the end of a build)."""
    array = group[name]
    digests = [chunk_digest(array[chunk_slices(array, i)]) for i in range(array.cdata_shape[0])]
    target = group.require_array(
        f"checksums/{name}",
        shape=(len(digests),),
        chunks=(max(1, len(digests)),),
        dtype="uint64",
        fill_value=0,
        config={"write_empty_chunks": True},
    )
    if len(digests):
        target[:] = np.array(digests, dtype=np.uint64)


@dataclass
class VerifyReport:
    """What :func:`verify` found: ``problems`` is empty for a sound store."""

    location: str
    chunks_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


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
    report = VerifyReport(location=str(location))
    group, meta = open_store(location, storage_options=storage_options)
    if meta.get("state") != "complete":
        report.problems.append(f"the build is not complete (state: {meta.get('state')})")
        return report
    store = group.store
    fs = getattr(store, "fs", None)
    if fs is not None:  # an fsspec store: look at the objects now, not at cached listings
        fs.invalidate_cache()
    base = group.path.strip("/")
    for name in _checksummed_arrays(group):
        array = group[name]
        recorded = group[f"checksums/{name}"][:]
        for index in range(array.cdata_shape[0]):
            report.chunks_checked += 1
            key = chunk_key(array, index)
            if not sync(store.exists(f"{base}/{key}" if base else key)):
                report.problems.append(f"missing chunk {key}")
                continue
            try:
                data = array[chunk_slices(array, index)]
            except Exception as exc:  # noqa: BLE001 - any decoding failure means corruption
                report.problems.append(f"corrupted chunk {key} ({type(exc).__name__})")
                continue
            if chunk_digest(data) != int(recorded[index]):
                report.problems.append(f"corrupted chunk {key} (checksum mismatch)")
    return report
