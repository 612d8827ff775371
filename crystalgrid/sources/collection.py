"""A collection written by ``crystalgrid fetch`` (:mod:`crystalgrid.collection`), read as a
source of structures: :func:`open_collection` checks every page against the manifest and gives
a :class:`CollectionSource`."""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crystalgrid.collection import (
    CITATION,
    LICENCE,
    MANIFEST_NAME,
    PAGES_DIR,
    load_manifest,
    page_digest,
    page_items,
    read_page,
)
from crystalgrid.errors import BadInputError, CrystalgridError, IntegrityError, NotFoundError
from crystalgrid.sources.base import RawRecord, Rejected
from crystalgrid.sources.location import RemotePath

__all__ = ["CollectionSource", "open_collection"]


def _as_raw(record: Any, origin: str) -> RawRecord | Rejected:
    if not isinstance(record, dict):
        return Rejected("", "unparsable", f"{origin}: not a record object")
    material_id = str(record.get("material_id") or "")
    structure = record.get("structure")
    reject = record.get("reject")
    if isinstance(reject, dict) and reject.get("reason"):
        detail = str(reject.get("detail") or "")
        return Rejected(material_id, str(reject["reason"]), f"{origin}: {detail}")
    if not isinstance(structure, dict):
        return Rejected(material_id, "no_structure", f"{origin}: the record has no structure")
    properties = record.get("properties")
    return RawRecord(
        material_id=material_id,
        kind="dict",
        payload=structure,
        origin=origin,
        properties=dict(properties) if isinstance(properties, dict) else {},
    )


class CollectionSource:
    """A collection opened for reading: the :class:`~crystalgrid.sources.base.Source` protocol.

    Use :func:`open_collection` to make one. ``records()`` re-reads the pages each time and
    checks every page's checksum again as it goes.

    Attributes:
        name: the directory's name.
        path: the collection directory.
    """

    kind = "collection"
    describes = "a crystalgrid collection (a folder with collection.json, from crystalgrid fetch)"

    @classmethod
    def can_open(cls, path: Path | RemotePath) -> bool:
        """A folder holding ``collection.json``."""
        return path.is_dir() and (path / MANIFEST_NAME).is_file()

    @classmethod
    def from_location(cls, path: Path | RemotePath, **kw: Any) -> CollectionSource:
        """:func:`open_collection` on a local folder.

        Raises:
            BadInputError: a collection by URL (copy it to a local folder first).
        """
        if isinstance(path, RemotePath):
            raise BadInputError(
                f"{path} is a crystalgrid collection: read by URL it is not supported; "
                "copy it to a local folder first"
            )
        return open_collection(path, **kw)

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        *,
        name: str | None = None,
        licence: str | None = None,
        citation: str | None = None,
    ) -> None:
        self.path = path
        self.name = name or path.name
        self._manifest = manifest
        self._licence = licence
        self._citation = citation

    def __len__(self) -> int:
        """The number of records (valid or not) in the collection."""
        return int(self._manifest.get("count", 0))

    def __repr__(self) -> str:
        return f"CollectionSource({str(self.path)!r}, count={len(self)})"

    @property
    def complete(self) -> bool:
        """Whether the fetch that wrote the collection got every page."""
        return bool(self._manifest.get("complete"))

    def records(self) -> Iterator[RawRecord | Rejected]:
        """Every record, in page order then record order.

        Yields:
            A :class:`RawRecord` (``kind="dict"``, payload ``Structure.as_dict()``, the
            record's properties) or a :class:`Rejected` for a record with no structure.

        Raises:
            IntegrityError: a page went missing or changed since the collection was opened.
        """
        for name, info in page_items(self._manifest):
            for i, record in enumerate(read_page(self.path, name, info.get("sha256"))):
                yield _as_raw(record, f"{self.name}/{PAGES_DIR}/{name}[{i}]")

    def provenance(self) -> dict[str, Any]:
        """The manifest without its page table, plus ``kind`` and ``location``.

        Carries ``licence`` and ``citation`` (for a Materials Project fetch its CC-BY 4.0 terms; an
        OPTIMADE fetch's are the provider's, none assumed), the
        query, database and client versions, the time and the record count.
        """
        info = {
            k: copy.deepcopy(v)
            for k, v in self._manifest.items()
            if k not in ("pages", "page_urls")  # per-page bookkeeping, not provenance
        }
        materials_project = info.get("source") in (None, "materials-project")
        info["licence"] = (
            info.get("licence") or self._licence or (LICENCE if materials_project else None)
        )
        cited = info.get("citation") or (CITATION if materials_project else "")
        if self._citation and self._citation not in cited:
            cited = f"{cited}; {self._citation}" if cited else self._citation
        info["citation"] = cited or None
        info["kind"] = "collection"
        info["location"] = str(self.path.resolve())
        info["pages_present"] = len(self._manifest["pages"])
        return info

    def fingerprint(self) -> str:
        """SHA-256 (hex) over the page names and page checksums, in page order."""
        digest = hashlib.sha256()
        for name, info in page_items(self._manifest):
            digest.update(f"{name} {info.get('sha256')}\n".encode())
        return digest.hexdigest()


def open_collection(
    path: str | os.PathLike[str],
    *,
    allow_incomplete: bool = False,
    name: str | None = None,
    licence: str | None = None,
    citation: str | None = None,
) -> CollectionSource:
    """Open a collection for reading, checking every page against the manifest's checksums.

    Args:
        path: the collection directory (the one holding ``collection.json``).
        allow_incomplete: open a collection whose fetch did not get every page (by default
            that is an error, so that a dataset is never built silently from part of a query).
        name: the source's name (default: the directory's name).
        licence: used only when the manifest records none (the data's licence is the data's).
        citation: appended to the manifest's citation (e.g. the paper an id list comes from);
            the Materials Project's citation is never dropped from its collections.

    Returns:
        The collection as a :class:`CollectionSource`.

    Raises:
        NotFoundError: no collection there.
        BadInputError: a manifest that is not one, or an incomplete collection without
            ``allow_incomplete``.
        IntegrityError: a missing or corrupted page (named).
        CrystalgridError: a manifest or page the system cannot read.
    """
    root = Path(path)
    manifest = load_manifest(root) if root.is_dir() else None
    if manifest is None:
        raise NotFoundError(f"no collection at {root} (no {MANIFEST_NAME})")
    for page, info in page_items(manifest):
        file = root / PAGES_DIR / page
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(
                f"collection {root}: page {page} is missing; "
                "run the same `crystalgrid fetch` again to download it again"
            ) from None
        except OSError as exc:
            raise CrystalgridError(f"collection {root}: cannot read page {page}: {exc}") from exc
        if page_digest(data) != info.get("sha256"):
            raise IntegrityError(
                f"collection {root}: page {page} is corrupted (checksum differs); "
                "run the same `crystalgrid fetch` again to download it again"
            )
    if not manifest.get("complete") and not allow_incomplete:
        expected = manifest.get("expected_pages")
        have = len(manifest["pages"])
        of = f" ({have} of {expected} pages)" if expected is not None else ""
        raise BadInputError(
            f"collection {root} is incomplete{of}: run the same `crystalgrid fetch` "
            "again to finish it"
        )
    return CollectionSource(root, manifest, name=name, licence=licence, citation=citation)
