"""Upgrading a finished store built before named dimensions, in place (metadata only)."""

from __future__ import annotations

import json
import os
from typing import Any

import zarr
from zarr.core.metadata import ArrayV3Metadata
from zarr.core.sync import sync

from crystalgrid.errors import BadInputError, IntegrityError, first_line
from crystalgrid.remote import remote_errors, store_key
from crystalgrid.store._meta import StoreMeta
from crystalgrid.store._open import (
    BUFFER_PROTOTYPE,
    METADATA_ERRORS,
    array_at,
    arrays_under,
    open_group,
    open_store,
)
from crystalgrid.store._schema import dimension_names
from crystalgrid.store._writer import consolidate

__all__ = ["has_named_dimensions", "upgrade"]


def has_named_dimensions(group: zarr.Group) -> bool:
    """Whether the store's arrays carry dimension names (stores built before they were
    added need ``crystalgrid upgrade``)."""
    metadata = array_at(group, "density").metadata
    return isinstance(metadata, ArrayV3Metadata) and metadata.dimension_names is not None


def upgrade(
    location: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Give a finished store built before named dimensions its ``dimension_names`` and
    consolidated metadata, in place. Only metadata documents are rewritten (chunks, and so
    checksums and ``verify``, are untouched); a store that has both is left as it is.

    Returns:
        The paths of the arrays that got dimension names.

    Raises:
        NotFoundError: no dataset there.
        BadInputError: not a crystalgrid store, or an unfinished build.
        IntegrityError: the store's metadata is missing or damaged.
    """
    with remote_errors(location):
        _, attrs = open_store(location, storage_options=storage_options)
        if not StoreMeta.from_attrs(attrs).complete:
            raise BadInputError(
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
            raise IntegrityError(
                f"{location}: damaged metadata ({first_line(exc)}); run crystalgrid verify, "
                "then restore or rebuild the store"
            ) from None
        for path in paths:
            key = store_key(base, f"{path}/zarr.json")
            try:
                document = _read_document(group, key)
            except METADATA_ERRORS as exc:
                raise IntegrityError(
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


def _read_document(group: zarr.Group, key: str) -> dict[str, Any]:
    """The JSON document at store key ``key``.

    Raises:
        KeyError: there is none; or what :data:`METADATA_ERRORS` holds for a damaged one.
    """
    raw = sync(group.store.get(key, prototype=BUFFER_PROTOTYPE))
    if raw is None:
        raise KeyError(f"no document {key}")
    document = json.loads(raw.to_bytes())
    if not isinstance(document, dict):
        raise TypeError(f"{key} does not hold a JSON object")
    return document
