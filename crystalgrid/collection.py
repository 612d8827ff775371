"""The on-disk collection of structures that ``crystalgrid fetch`` writes and the build reads.

A collection is a directory::

    <dir>/collection.json          provenance + manifest (the page table with checksums)
    <dir>/pages/page-000000.json.gz  a gzipped JSON list of records, one file per page
    <dir>/.lock                     held (flock) by the one writer at a time

A record is ``{"material_id", "formula", "structure" (pymatgen ``Structure.as_dict()``),
"properties": {...}}``. Each page file is written to a temporary name, flushed and renamed,
and ``collection.json`` is rewritten the same way after every page, so a page listed in the
manifest is complete on disk; a file the manifest does not list is ignored. Pages are gzipped
with a zero timestamp, so the same records always give the same bytes and the same checksums.

Readers use :func:`open_collection`, which returns a :class:`CollectionSource` (the
:class:`crystalgrid.sources.base.Source` protocol); writers use :class:`CollectionWriter`.
The format is documented in ``docs/fetch.md``.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystalgrid.errors import CrystalgridError
from crystalgrid.fileio import TMP_SUFFIX, hold_flock, write_atomic
from crystalgrid.jsonio import utc_now

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from crystalgrid.sources.base import RawRecord, Rejected

__all__ = [
    "CITATION",
    "FORMAT",
    "LICENCE",
    "MANIFEST_NAME",
    "PAGES_DIR",
    "CollectionSource",
    "CollectionWriter",
    "check_target",
    "is_collection",
    "load_manifest",
    "open_collection",
    "page_name",
]

FORMAT = "crystalgrid-collection/1"
MANIFEST_NAME = "collection.json"
PAGES_DIR = "pages"
LOCK_NAME = ".lock"
LICENCE = "CC-BY-4.0"
CITATION = "Jain et al., APL Materials 1, 011002 (2013)"


def page_name(index: int) -> str:
    """The file name of page ``index`` (0-based), e.g. ``page-000003.json.gz``."""
    return f"page-{index:06d}.json.gz"


def is_collection(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding a ``collection.json``."""
    return (Path(path) / MANIFEST_NAME).is_file()


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read ``<path>/collection.json``.

    Returns:
        The manifest, or ``None`` when the file does not exist.

    Raises:
        CrystalgridError: the file cannot be read, is not JSON, or is not a manifest of this
            format.
    """
    file = Path(path) / MANIFEST_NAME
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CrystalgridError(f"cannot read {file}: {exc}") from exc
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CrystalgridError(f"{file} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CrystalgridError(f"{file} is not a {FORMAT} manifest (format: {found!r})")
    if not isinstance(manifest.get("pages"), dict):
        raise CrystalgridError(f"{file} has no page table")
    return manifest


def check_target(path: str | os.PathLike[str]) -> None:
    """Check that a collection can be written at ``path``: new, empty, or a collection.

    Raises:
        CrystalgridError: ``path`` is a file, or a directory with other things in it.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise CrystalgridError(f"{target} exists and is not a directory")
    if not target.is_dir() or is_collection(target):
        return
    others = sorted(p.name for p in target.iterdir() if p.name not in (PAGES_DIR, LOCK_NAME))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise CrystalgridError(
            f"{target} is not empty and holds no {MANIFEST_NAME} ({shown}); "
            "choose a new or empty directory for the collection"
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target``, atomically and durably (fsynced).

    Raises:
        CrystalgridError: the write failed (disk full, permissions); ``target`` is untouched.
    """
    try:
        write_atomic(target, data, durable=True)
    except OSError as exc:
        raise CrystalgridError(f"cannot write {target}: {exc.strerror or exc}") from exc


def encode_page(records: list[dict[str, Any]]) -> bytes:
    """The bytes of a page file: compact JSON, gzipped with a zero timestamp (reproducible)."""
    text = json.dumps(records, separators=(",", ":"), allow_nan=False)
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


def read_page(path: str | os.PathLike[str], name: str, sha256: str | None) -> list[dict[str, Any]]:
    """Read and check one page of the collection at ``path``.

    Args:
        path: the collection directory.
        name: the page's file name (see :func:`page_name`).
        sha256: the checksum the manifest lists for it; ``None`` skips the check.

    Returns:
        The page's records.

    Raises:
        CrystalgridError: the page is missing, its checksum differs, or it cannot be decoded.
    """
    root = Path(path)
    file = root / PAGES_DIR / name
    hint = "run the same `crystalgrid fetch` again to download it again"
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise CrystalgridError(f"collection {root}: page {name} is missing; {hint}") from None
    except OSError as exc:
        raise CrystalgridError(f"collection {root}: cannot read page {name}: {exc}") from exc
    if sha256 is not None and _sha256(data) != sha256:
        raise CrystalgridError(f"collection {root}: page {name} is corrupted (checksum); {hint}")
    try:
        records = json.loads(gzip.decompress(data))
    except (OSError, EOFError, ValueError) as exc:
        raise CrystalgridError(f"collection {root}: page {name} cannot be decoded ({exc})") from exc
    if not isinstance(records, list):
        raise CrystalgridError(f"collection {root}: page {name} does not hold a list of records")
    return records


def _page_items(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The page table in page order (names are zero-padded, so name order is page order)."""
    return sorted(manifest["pages"].items())


def _as_raw(record: Any, origin: str) -> RawRecord | Rejected:
    # Imported here, not at the top: crystalgrid.sources imports this module.
    from crystalgrid.sources.base import RawRecord, Rejected

    if not isinstance(record, dict):
        return Rejected("", "unparsable", f"{origin}: not a record object")
    material_id = str(record.get("material_id") or "")
    structure = record.get("structure")
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
            CrystalgridError: a page went missing or changed since the collection was opened.
        """
        for name, info in _page_items(self._manifest):
            for i, record in enumerate(read_page(self.path, name, info.get("sha256"))):
                yield _as_raw(record, f"{self.name}/{PAGES_DIR}/{name}[{i}]")

    def provenance(self) -> dict[str, Any]:
        """The manifest without its page table, plus ``kind`` and ``location``.

        Carries ``licence`` and ``citation`` (the Materials Project's CC-BY 4.0 terms), the
        query, database and client versions, the time and the record count.
        """
        info = {k: copy.deepcopy(v) for k, v in self._manifest.items() if k != "pages"}
        info["licence"] = info.get("licence") or self._licence or LICENCE
        cited = info.get("citation") or CITATION
        if self._citation and self._citation not in cited:
            cited = f"{cited}; {self._citation}"
        info["citation"] = cited
        info["kind"] = "collection"
        info["location"] = str(self.path.resolve())
        info["pages_present"] = len(self._manifest["pages"])
        return info

    def fingerprint(self) -> str:
        """SHA-256 (hex) over the page names and page checksums, in page order."""
        digest = hashlib.sha256()
        for name, info in _page_items(self._manifest):
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
            the Materials Project citation is never dropped.

    Returns:
        The collection as a :class:`CollectionSource`.

    Raises:
        CrystalgridError: no collection there, an unreadable manifest, a missing or corrupted
            page (named), or an incomplete collection without ``allow_incomplete``.
    """
    root = Path(path)
    manifest = load_manifest(root) if root.is_dir() else None
    if manifest is None:
        raise CrystalgridError(f"no collection at {root} (no {MANIFEST_NAME})")
    for page, info in _page_items(manifest):
        file = root / PAGES_DIR / page
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise CrystalgridError(
                f"collection {root}: page {page} is missing; "
                "run the same `crystalgrid fetch` again to download it again"
            ) from None
        except OSError as exc:
            raise CrystalgridError(f"collection {root}: cannot read page {page}: {exc}") from exc
        if _sha256(data) != info.get("sha256"):
            raise CrystalgridError(
                f"collection {root}: page {page} is corrupted (checksum differs); "
                "run the same `crystalgrid fetch` again to download it again"
            )
    if not manifest.get("complete") and not allow_incomplete:
        expected = manifest.get("expected_pages")
        have = len(manifest["pages"])
        of = f" ({have} of {expected} pages)" if expected is not None else ""
        raise CrystalgridError(
            f"collection {root} is incomplete{of}: run the same `crystalgrid fetch` "
            "again to finish it"
        )
    return CollectionSource(root, manifest, name=name, licence=licence, citation=citation)


class CollectionWriter:
    """Writes one collection: pages atomically, the manifest after each; one writer at a time.

    Use it as a context manager. On entry it takes ``<dir>/.lock``, removes temporary files a
    killed writer left, and drops from the manifest any page whose file is missing or whose
    checksum differs (:attr:`dropped`), so that a resumed fetch downloads it again.

    Args:
        path: the collection directory (created if needed; must be new, empty or a collection).
        manifest: the manifest to write: a new one, or the existing one being resumed. It must
            hold ``format`` and a ``pages`` table; ``count`` and ``updated`` are maintained.

    Attributes:
        manifest: the manifest as last written.
        dropped: names of pages dropped on entry (missing or corrupted files).
    """

    def __init__(self, path: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = copy.deepcopy(manifest)
        self.manifest.setdefault("pages", {})
        self.dropped: list[str] = []
        self._lock: contextlib.ExitStack | None = None

    def __enter__(self) -> CollectionWriter:
        check_target(self.path)
        pages = self.path / PAGES_DIR
        try:
            pages.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CrystalgridError(f"cannot create {pages}: {exc.strerror or exc}") from exc
        self._take_lock()
        for folder in (self.path, pages):
            for stale in folder.glob(f".*{TMP_SUFFIX}"):
                with contextlib.suppress(OSError):
                    stale.unlink()
        for name, info in list(self.manifest["pages"].items()):
            file = pages / name
            try:
                good = _sha256(file.read_bytes()) == info.get("sha256")
            except OSError:
                good = False
            if not good:
                self.dropped.append(name)
                del self.manifest["pages"][name]
        self._flush()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def _take_lock(self) -> None:
        lock = contextlib.ExitStack()
        lock.enter_context(
            hold_flock(
                self.path / LOCK_NAME,
                f"another crystalgrid process is writing to {self.path}; "
                "wait for it to finish (or stop it) and try again",
            )
        )
        self._lock = lock

    def _flush(self) -> None:
        self.manifest["count"] = sum(int(p["count"]) for p in self.manifest["pages"].values())
        self.manifest["updated"] = utc_now()
        text = json.dumps(self.manifest, indent=2, allow_nan=False) + "\n"
        _atomic_write(self.path / MANIFEST_NAME, text.encode("utf-8"))

    def has_page(self, index: int) -> bool:
        """Whether page ``index`` is on disk and listed in the manifest."""
        return page_name(index) in self.manifest["pages"]

    def write_page(self, index: int, records: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """Write page ``index`` atomically, then the manifest that lists it.

        Args:
            index: the page number (0-based).
            records: the page's records (JSON-serialisable dicts).
            **extra: more fields for the page's manifest entry (JSON-serialisable).

        Returns:
            The page's manifest entry: ``sha256`` (hex, of the gzipped file), ``count``, extras.

        Raises:
            CrystalgridError: the disk refused the write.
        """
        if self._lock is None:
            raise RuntimeError("CollectionWriter.write_page outside its `with` block")
        data = encode_page(records)
        name = page_name(index)
        _atomic_write(self.path / PAGES_DIR / name, data)
        entry = {"sha256": _sha256(data), "count": len(records), **extra}
        self.manifest["pages"][name] = entry
        self._flush()
        return entry

    def update(self, **fields: Any) -> None:
        """Set top-level manifest fields (e.g. ``complete=True``) and rewrite the manifest."""
        self.manifest.update(fields)
        self._flush()

    def material_ids(self) -> Iterator[str]:
        """The material ids of every written page, in page order (reads the pages)."""
        for name, info in _page_items(self.manifest):
            for record in read_page(self.path, name, info.get("sha256")):
                yield str(record.get("material_id"))
