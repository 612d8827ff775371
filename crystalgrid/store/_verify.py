"""Verifying a finished store: every chunk present, whole, and as it was written."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from crystalgrid.errors import RemoteStorageError, first_line
from crystalgrid.remote import remote_errors, store_key
from crystalgrid.store._checksums import chunk_digest, chunk_key, read_chunk, whole_blosc_frame
from crystalgrid.store._meta import StoreMeta
from crystalgrid.store._open import (
    BUFFER_PROTOTYPE,
    METADATA_ERRORS,
    array_at,
    group_at,
    open_store,
    read_error,
)

__all__ = ["VerifyReport", "verify"]


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

    walk(group_at(group, "checksums"), "")
    return sorted(names)


def verify(
    location: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
) -> VerifyReport:
    """Check that every chunk of every array is present and matches its recorded checksum.

    A missing chunk would otherwise read back silently as zeros, so presence is checked in
    the store itself; a chunk that no longer decodes, or decodes to other values, is
    reported as corrupted.
    """
    with remote_errors(location):
        return _verify(location, storage_options)


def _verify(
    location: str | os.PathLike[str], storage_options: dict[str, Any] | None
) -> VerifyReport:
    report = VerifyReport(location=str(location))
    # Each array's own zarr.json, as every Zarr reader can read it (not the consolidated copy).
    group, attrs = open_store(location, storage_options=storage_options, consolidated=False)
    meta = StoreMeta.from_attrs(attrs)
    if not meta.complete:
        report.problems.append(f"the build is not complete (state: {meta.state})")
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
    checksum = meta.checksum
    for name in names:
        try:
            array = array_at(group, name)
            recorded = np.asarray(array_at(group, f"checksums/{name}")[:])
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
                data = read_chunk(array, index)
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
    error = read_error(exc, path, location, keys=[key])
    if isinstance(error, RemoteStorageError):
        raise error from None
