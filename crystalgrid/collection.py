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

Writers use :class:`CollectionWriter`; readers use
:func:`crystalgrid.sources.open_collection`, which returns the collection as a source of
structures (:class:`crystalgrid.sources.CollectionSource`). The format is documented in
``docs/fetch.md``.
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

from crystalgrid.errors import BadInputError, CrystalgridError, IntegrityError
from crystalgrid.fileio import TMP_SUFFIX, hold_flock, write_atomic
from crystalgrid.jsonio import utc_now

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

__all__ = [
    "CITATION",
    "FORMAT",
    "LICENCE",
    "MANIFEST_NAME",
    "PAGES_DIR",
    "CollectionWriter",
    "check_target",
    "encode_page",
    "is_collection",
    "load_manifest",
    "page_digest",
    "page_items",
    "page_name",
    "read_page",
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
        BadInputError: the file is not JSON, or is not a manifest of this format.
        CrystalgridError: the file cannot be read (the system's error).
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
        raise BadInputError(f"{file} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BadInputError(f"{file} is not a {FORMAT} manifest (format: {found!r})")
    if not isinstance(manifest.get("pages"), dict):
        raise BadInputError(f"{file} has no page table")
    return manifest


def check_target(path: str | os.PathLike[str]) -> None:
    """Check that a collection can be written at ``path``: new, empty, or a collection.

    Raises:
        BadInputError: ``path`` is a file, or a directory with other things in it.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise BadInputError(f"{target} exists and is not a directory")
    if not target.is_dir() or is_collection(target):
        return
    others = sorted(p.name for p in target.iterdir() if p.name not in (PAGES_DIR, LOCK_NAME))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise BadInputError(
            f"{target} is not empty and holds no {MANIFEST_NAME} ({shown}); "
            "choose a new or empty directory for the collection"
        )


def page_digest(data: bytes) -> str:
    """SHA-256 (hex) of a page file's bytes, as the manifest lists it."""
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
        IntegrityError: the page is missing, its checksum differs, or it cannot be decoded.
        CrystalgridError: the page cannot be read (the system's error).
    """
    root = Path(path)
    file = root / PAGES_DIR / name
    hint = "run the same `crystalgrid fetch` again to download it again"
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"collection {root}: page {name} is missing; {hint}") from None
    except OSError as exc:
        raise CrystalgridError(f"collection {root}: cannot read page {name}: {exc}") from exc
    if sha256 is not None and page_digest(data) != sha256:
        raise IntegrityError(f"collection {root}: page {name} is corrupted (checksum); {hint}")
    try:
        records = json.loads(gzip.decompress(data))
    except (OSError, EOFError, ValueError) as exc:
        raise IntegrityError(f"collection {root}: page {name} cannot be decoded ({exc})") from exc
    if not isinstance(records, list):
        raise IntegrityError(f"collection {root}: page {name} does not hold a list of records")
    return records


def page_items(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The page table in page order (names are zero-padded, so name order is page order)."""
    return sorted(manifest["pages"].items())


class CollectionWriter:
    """Writes one collection: pages atomically, the manifest after each; one writer at a time.

    Use it as a context manager. On entry it takes ``<dir>/.lock``, removes temporary files a
    killed writer left, and drops from the manifest any page whose file is missing or whose
    checksum differs (:attr:`dropped`), so that a resumed fetch downloads it again.

    The lock is a kernel ``flock`` (:func:`crystalgrid.fileio.hold_flock`), not the store's
    lock file (:mod:`crystalgrid.lock`): a collection is a local folder written by one process,
    and the kernel frees a flock when that process dies, so it needs no heartbeat, takeover or
    staleness. A store's lock must also work on object stores and across hosts, and travels
    to the Dask workers that write blocks, which a flock cannot do.

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
                good = page_digest(file.read_bytes()) == info.get("sha256")
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
        entry = {"sha256": page_digest(data), "count": len(records), **extra}
        self.manifest["pages"][name] = entry
        self._flush()
        return entry

    def update(self, **fields: Any) -> None:
        """Set top-level manifest fields (e.g. ``complete=True``) and rewrite the manifest."""
        self.manifest.update(fields)
        self._flush()

    def material_ids(self) -> Iterator[str]:
        """The material ids of every written page, in page order (reads the pages)."""
        for name, info in page_items(self.manifest):
            for record in read_page(self.path, name, info.get("sha256")):
                yield str(record.get("material_id"))
