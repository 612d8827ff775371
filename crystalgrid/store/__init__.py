"""The Zarr layout of a crystalgrid dataset: its schema, metadata, checksums and verification.

One Zarr 3 group per representation (``single.zarr``, ``repeated.zarr``). :data:`SCHEMA` lists
every array (path, shape, dtype, chunking, when it is checksummed); the builder creates the
arrays from it, :func:`verify` checks the ones it marks, and docs/store-format.md shows it as
a table (:func:`schema_table`; a test keeps the two equal). Everything else (grid spec,
representation, seed, provenance, licence, splits, fingerprint, state) is in the group's
``crystalgrid`` attribute (:class:`StoreMeta`). Samples are stored crystal by crystal with the
crystals ordered by split, so each split is one contiguous range of samples.

The names here are what users and the other layers call; the rest lives in private modules:
``_schema`` (the arrays and codecs), ``_meta`` (the attribute), ``_open`` (opening and
reading, one-line errors), ``_checksums`` (chunk digests), ``_chunks`` (whole-chunk reads and
writes of the grids), ``_writer`` (tables, blocks, finalize), ``_verify`` and ``_upgrade``.
"""

from __future__ import annotations

from crystalgrid.store._checksums import CHECKSUM
from crystalgrid.store._chunks import ChunkReader, ChunkWriter
from crystalgrid.store._describe import describe
from crystalgrid.store._meta import StoreMeta
from crystalgrid.store._open import create_group, open_array, open_group, open_store, read_rows
from crystalgrid.store._schema import (
    CODECS,
    FORMAT,
    SCHEMA,
    SPLITS,
    UNEXPECTED_ERROR,
    ArraySchema,
    compressor,
    dimension_names,
    schema_table,
)
from crystalgrid.store._upgrade import has_named_dimensions, upgrade
from crystalgrid.store._verify import VerifyReport, verify
from crystalgrid.store._writer import (
    blocks_done,
    create_store,
    finalize,
    read_crystals,
    write_block,
)

__all__ = [
    "CHECKSUM",
    "CODECS",
    "FORMAT",
    "SCHEMA",
    "SPLITS",
    "UNEXPECTED_ERROR",
    "ArraySchema",
    "ChunkReader",
    "ChunkWriter",
    "StoreMeta",
    "VerifyReport",
    "blocks_done",
    "compressor",
    "create_group",
    "create_store",
    "describe",
    "dimension_names",
    "finalize",
    "has_named_dimensions",
    "open_array",
    "open_group",
    "open_store",
    "read_crystals",
    "read_rows",
    "schema_table",
    "upgrade",
    "verify",
    "write_block",
]
