"""Chunk checksums: where each chunk of an array lies, and the digest of its values.

Every array of a store is chunked along its first axis only. ``checksums/<array path>``
holds one digest per chunk (:data:`CHECKSUM` in new stores), taken when the chunk was
written; :func:`~crystalgrid.store.verify` compares them.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
import zarr

from crystalgrid.errors import BadInputError
from crystalgrid.store._open import array_at
from crystalgrid.store._schema import dimension_names

__all__ = [
    "CHECKSUM",
    "CHECKSUMS",
    "checksum_whole_array",
    "chunk_digest",
    "chunk_key",
    "chunk_slices",
    "read_chunk",
    "whole_blosc_frame",
]

#: The digests a store's ``checksums/`` can hold, named by its ``checksum`` attribute.
CHECKSUMS = ("crc32", "blake2b-64")
#: What new stores use: CRC-32 runs ~5x faster than BLAKE2b here and detects damage as well
#: (it is not meant to resist tampering).
CHECKSUM = "crc32"


def chunk_digest(data: np.ndarray, checksum: str = CHECKSUM) -> int:
    """The digest of an array's values (C order) as an unsigned integer: ``"crc32"`` or
    ``"blake2b-64"`` (:data:`CHECKSUMS`).

    Raises:
        BadInputError: for another digest name (a store written by a newer crystalgrid).
    """
    payload: bytes | memoryview
    if data.dtype.kind in "OUT":  # strings: digest their UTF-8 with separators
        payload = "\x1f".join(str(x) for x in np.asarray(data).reshape(-1)).encode()
    else:
        # The array's bytes, without a copy (reshape(-1) of a contiguous array is a view).
        payload = np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
    if checksum == "crc32":
        return zlib.crc32(payload)
    if checksum == "blake2b-64":
        return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little")
    raise BadInputError(
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


def read_chunk(array: zarr.Array, index: int) -> np.ndarray:
    """The values of chunk ``index`` along axis 0, decoded by zarr."""
    return np.asarray(array[chunk_slices(array, index)])


def checksum_whole_array(group: zarr.Group, name: str, *, checksum: str = CHECKSUM) -> None:
    """Digest every chunk of ``name`` now (arrays written once at the end of a build)."""
    array = array_at(group, name)
    digests = [chunk_digest(read_chunk(array, i), checksum) for i in range(array.cdata_shape[0])]
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


def whole_blosc_frame(raw: bytes | memoryview) -> bool:
    """Whether ``raw`` is as long as the compressed size its Blosc header states (every
    array of the store ends in Blosc). A frame cut short fails; one of the right length
    is left to decoding and the checksum."""
    if len(raw) < 16:
        return False
    return int.from_bytes(raw[12:16], "little") == len(raw)
