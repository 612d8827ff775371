"""Sources that read structures from files: CIF folders, CDVAE-style CSVs (one file, or a
folder of train/val/test files), JSON lists.

Files are local paths or fsspec URLs (``s3://bucket/structures.json.gz``, a CIF folder as
``s3://bucket/cifs/``): a URL is opened through :class:`RemotePath`, with credentials and
endpoints from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...), never
from crystalgrid.

Each class implements the :class:`~crystalgrid.sources.base.Source` protocol. Listing a
source is cheap: payloads (CIF text or ``Structure.as_dict()`` dicts) are yielded undecoded
and parsed later by :func:`~crystalgrid.sources.base.parse_record`. Records come in a fixed
order (file names sorted, or the order of rows / list items in the file), and problems that
concern one record (an unreadable file, an empty ``cif`` cell, a repeated id) are yielded as
:class:`~crystalgrid.sources.base.Rejected` with a short reason:

- ``"unreadable"``: a CIF file that cannot be read as UTF-8 text.
- ``"no_structure"``: a record that holds no structure (an empty file or cell, no
  ``structure`` key).
- ``"no_id"``: a CSV row or JSON record without a ``material_id``.
- ``"duplicate_id"``: a ``material_id`` seen earlier in the same source.

Problems with the whole input (a missing file, a CSV without the required columns, a file
that is not JSON) raise :class:`~crystalgrid.errors.CrystalgridError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import itertools
import json
import math
import sys
import zlib
from dataclasses import replace
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import IO, TYPE_CHECKING, Any

from crystalgrid.errors import CrystalgridError, NotFoundError
from crystalgrid.jsonstream import iter_json
from crystalgrid.remote import is_url, remote_options
from crystalgrid.sources.base import RawRecord, Rejected

if TYPE_CHECKING:
    import os
    from collections.abc import Generator, Iterable, Iterator

__all__ = [
    "CifDirectorySource",
    "CifFileSource",
    "CsvSource",
    "CsvSplitsSource",
    "JsonSource",
    "RemotePath",
]

#: Columns a CSV source must have (the CDVAE / MP-20 layout).
CSV_REQUIRED = ("material_id", "cif")
#: Name of the CGCNN targets file inside a CIF directory.
ID_PROP = "id_prop.csv"

_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
_CHUNK = 1 << 20


#: CIF files fetched together from a URL folder (concurrently, by async filesystems).
_CIF_BATCH = 64


class RemotePath:
    """A file or folder behind an fsspec URL, with the few ``pathlib`` methods sources use.

    ``str()`` gives the URL back. The filesystem comes from ``fsspec.url_to_fs``, so
    credentials, endpoints and options come from the environment and fsspec's configuration
    (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``FSSPEC_S3_*``); nothing is stored.
    Object stores have no folders: a "folder" is a key prefix that has objects under it.

    Raises:
        CrystalgridError: fsspec, or the package for the URL's protocol (s3fs for ``s3://``),
            is not installed.
    """

    def __init__(
        self, url: str, *, fs: Any = None, path: str | None = None, info: dict | None = None
    ) -> None:
        if fs is None:
            try:
                import fsspec

                fs, path = fsspec.url_to_fs(url, **remote_options(url, None))
            except ImportError as exc:
                raise CrystalgridError(
                    f"reading {url} needs fsspec and its {url.split(':')[0]} filesystem "
                    f"(pip install 'crystalgrid[cloud]'): {exc}"
                ) from None
        self.url = url
        self.fs = fs
        self.fspath = str(path).rstrip("/")
        self._info = info

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(
            f"{self.url.rstrip('/')}/{name}", fs=self.fs, path=f"{self.fspath}/{name}"
        )

    @property
    def name(self) -> str:
        return self.fspath.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    def expanduser(self) -> RemotePath:
        return self

    def resolve(self) -> RemotePath:
        return self

    def info(self) -> dict[str, Any]:
        """The filesystem's record of the object (from the folder listing when there was one)."""
        if self._info is None:
            self._info = self.fs.info(self.fspath)
        return self._info

    def exists(self) -> bool:
        return self._info is not None or bool(self.fs.exists(self.fspath))

    def is_dir(self) -> bool:
        if self._info is not None:
            return self._info.get("type") == "directory"
        return bool(self.fs.isdir(self.fspath))

    def is_file(self) -> bool:
        if self._info is not None:
            return self._info.get("type") == "file"
        return bool(self.fs.isfile(self.fspath))

    def iterdir(self) -> Iterator[RemotePath]:
        """The objects and prefixes right under this folder, each with its listing info."""
        for entry in self.fs.ls(self.fspath, detail=True):
            child = str(entry["name"]).rstrip("/")
            if child == self.fspath:
                continue  # some stores list the folder's own marker object
            name = child.rsplit("/", 1)[-1]
            yield RemotePath(f"{self.url.rstrip('/')}/{name}", fs=self.fs, path=child, info=entry)

    def open(
        self, mode: str = "r", *, newline: str | None = None, encoding: str | None = None
    ) -> Any:
        """A binary (``"rb"``) or text (``"r"``) file object, read as a stream."""
        handle = self.fs.open(self.fspath, "rb")
        if "b" in mode:
            return handle
        return io.TextIOWrapper(handle, encoding=encoding or "utf-8", newline=newline)

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.fspath))

    def stat(self) -> SimpleNamespace:
        """Only ``st_size`` (bytes)."""
        return SimpleNamespace(st_size=int(self.info().get("size") or 0))

    def version_token(self) -> str:
        """Size and the filesystem's checksum (an ETag on S3): changes when the bytes do.

        Read from the listing where there was one, so fingerprinting a folder of objects
        costs no request per object.
        """
        info = self.info()
        tag = next(
            (info[k] for k in ("ETag", "etag", "md5Hash", "crc32c", "checksum") if info.get(k)),
            None,
        )
        if tag is None:
            tag = self.fs.checksum(self.fspath)
        return f"{info.get('size')}:{str(tag).strip(chr(34))}"


def _is_url(location: Any) -> bool:
    return not isinstance(location, Path) and is_url(str(location))


def _resolve(path: str | os.PathLike[str] | RemotePath) -> Path | RemotePath:
    """An absolute path (or a URL's :class:`RemotePath`) that exists.

    Raises:
        CrystalgridError: ``"source not found: ..."``.
    """
    if isinstance(path, RemotePath) or _is_url(path):
        remote = path if isinstance(path, RemotePath) else RemotePath(str(path))
        if not remote.exists():
            raise NotFoundError(f"source not found: {path}")
        return remote
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise NotFoundError(f"source not found: {path}")
    return resolved


def _hash_files(paths: Iterable[Path | RemotePath], *, names: bool) -> str:
    """SHA-256 over the files' bytes (and their names when ``names``), in the given order.

    A URL's file contributes its size and checksum (:meth:`RemotePath.version_token`)
    instead of its bytes, so that fingerprinting a bucket does not download it.
    """
    digest = hashlib.sha256()
    for path in paths:
        if names:
            digest.update(path.name.encode("utf-8", "surrogateescape") + b"\0")
        if isinstance(path, RemotePath):
            digest.update(b"remote\0" + path.version_token().encode() + b"\0")
            continue
        digest.update(str(path.stat().st_size).encode() + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _number(text: str | None) -> int | float | None:
    """The finite number written in ``text`` (int if integral), else ``None``."""
    if text is None:
        return None
    text = text.strip()
    if not text or "_" in text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _is_scalar(value: Any) -> bool:
    """True for str, bool, int and finite float values (what properties may hold)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | bool | int)


class _FileSource:
    """What the file sources share: a path, a name, a licence and a citation."""

    kind = ""

    def __init__(
        self,
        path: Path | RemotePath,
        *,
        name: str | None,
        licence: str | None,
        citation: str | None,
    ) -> None:
        self.path = path
        self.name = name if name is not None else _stem(path)
        self.licence = licence
        self.citation = citation

    def _files(self) -> list[Path | RemotePath]:
        return [self.path]

    def provenance(self) -> dict[str, Any]:
        """Where the records come from: kind, absolute location, file count, licence, citation."""
        return {
            "kind": self.kind,
            "location": str(self.path),
            "files": len(self._files()),
            "licence": self.licence,
            "citation": self.citation,
        }

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the source file's bytes."""
        return _hash_files(self._files(), names=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


def _stem(path: Path | RemotePath) -> str:
    """A file's name without ``.json.gz`` / ``.csv`` / ... (a directory's name as is)."""
    if path.is_dir():
        return path.name
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem


class CifDirectorySource(_FileSource):
    """Every ``*.cif`` file of a directory, sorted by file name; the id is the file's stem.

    A CGCNN-style directory works as is: if it holds ``id_prop.csv`` (rows ``id,target``,
    no header), the second column becomes the property ``{"target": float}`` of the CIF
    with that id; CIFs without a row get no property, rows without a CIF are ignored.
    """

    kind = "cif_directory"

    def __init__(
        self,
        path: str | os.PathLike[str] | RemotePath,
        *,
        name: str | None = None,
        licence: str | None = None,
        citation: str | None = None,
    ) -> None:
        """Open a directory of CIFs.

        Args:
            path: the directory, or an fsspec URL of a folder (a key prefix: ``s3://b/cifs/``).
            name: the source's name (default: the directory's name).
            licence: the data's licence, stored in :meth:`provenance`.
            citation: what to cite for the data, stored in :meth:`provenance`.

        Raises:
            CrystalgridError: the path does not exist, is not a directory, or holds no
                ``*.cif`` file.
        """
        resolved = _resolve(path)
        if not resolved.is_dir():
            raise CrystalgridError(f"not a directory: {path}")
        super().__init__(resolved, name=name, licence=licence, citation=citation)
        if not self._cif_files():
            raise CrystalgridError(f"no .cif files in {resolved}")

    def _cif_files(self) -> list[Path | RemotePath]:
        files = (p for p in self.path.iterdir() if p.suffix.lower() == ".cif" and p.is_file())
        return sorted(files, key=lambda p: p.name)

    def _id_prop(self) -> Path | RemotePath | None:
        candidate = self.path / ID_PROP
        return candidate if candidate.is_file() else None

    def _files(self) -> list[Path | RemotePath]:
        extra = self._id_prop()
        return self._cif_files() + ([extra] if extra is not None else [])

    def _targets(self) -> dict[str, float]:
        """``{id: target}`` from ``id_prop.csv``; rows whose target is not a number are skipped."""
        id_prop = self._id_prop()
        if id_prop is None:
            return {}
        try:
            with id_prop.open(newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.reader(fh))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise CrystalgridError(f"{id_prop}: not a readable CSV ({exc})") from None
        targets: dict[str, float] = {}
        for row in rows:
            if len(row) < 2:
                continue
            value = _number(row[1])
            if value is not None:
                targets[row[0].strip()] = float(value)
        return targets

    def records(self) -> Iterator[RawRecord | Rejected]:
        """One ``"cif"`` record per file, in file-name order (see the class docstring)."""
        targets = self._targets()
        files = self._cif_files()
        if files and isinstance(files[0], RemotePath):  # a URL folder: fetch in batches
            fs = files[0].fs
            remote = [p for p in files if isinstance(p, RemotePath)]
            for start in range(0, len(remote), _CIF_BATCH):
                batch = remote[start : start + _CIF_BATCH]
                contents = fs.cat([p.fspath for p in batch], on_error="return")
                for item in batch:
                    yield _read_cif(item, targets, contents.get(item.fspath))
            return
        for path in files:
            yield _read_cif(path, targets)

    def provenance(self) -> dict[str, Any]:
        """Kind, absolute location, number of CIFs, licence, citation, and ``id_prop``.

        ``id_prop`` tells whether ``id_prop.csv`` was found (the CIF source of one file has it
        ``False``).
        """
        return {
            **super().provenance(),
            "files": len(self._cif_files()),
            "id_prop": self._id_prop() is not None,
        }

    def fingerprint(self) -> str:
        """SHA-256 over the sorted file names and bytes of the CIFs (and ``id_prop.csv``)."""
        return _hash_files(self._files(), names=True)


class CifFileSource(CifDirectorySource):
    """One CIF file as a source of one record (id: the file's stem)."""

    kind = "cif_file"

    def __init__(
        self,
        path: str | os.PathLike[str] | RemotePath,
        *,
        name: str | None = None,
        licence: str | None = None,
        citation: str | None = None,
    ) -> None:
        """Open one CIF file.

        Raises:
            CrystalgridError: the path does not exist or is not a file.
        """
        resolved = _resolve(path)
        if not resolved.is_file():
            raise CrystalgridError(f"not a file: {path}")
        _FileSource.__init__(self, resolved, name=name, licence=licence, citation=citation)

    def _cif_files(self) -> list[Path | RemotePath]:
        return [self.path]

    def _id_prop(self) -> Path | RemotePath | None:
        return None


def _read_cif(
    path: Path | RemotePath,
    targets: dict[str, float],
    data: bytes | BaseException | None = None,
) -> RawRecord | Rejected:
    """The record of one CIF file; ``data`` is its bytes (or the error) when already fetched."""
    material_id = path.stem
    try:
        if isinstance(data, BaseException):
            raise data
        text = (path.read_bytes() if data is None else bytes(data)).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Rejected(
            material_id,
            "unreadable",
            f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})",
        )
    except OSError as exc:
        return Rejected(material_id, "unreadable", f"{path.name}: {exc.strerror or exc}")
    if not text.strip():
        return Rejected(material_id, "no_structure", f"{path.name} is empty")
    properties = {"target": targets[material_id]} if material_id in targets else {}
    return RawRecord(material_id, "cif", text, origin=str(path), properties=properties)


class CsvSource(_FileSource):
    """A CSV with ``material_id`` and ``cif`` columns (the CDVAE / MP-20 layout).

    Rows are yielded in file order. Every other column whose value in a row is a finite
    number goes into that record's properties (ints stay ints); text, empty cells, NaN and
    unnamed columns (a pandas index) are left out.
    """

    kind = "csv"

    def __init__(
        self,
        path: str | os.PathLike[str] | RemotePath,
        *,
        name: str | None = None,
        licence: str | None = None,
        citation: str | None = None,
    ) -> None:
        """Open a CSV and check its header.

        Args:
            path: the ``.csv`` file (a path or an fsspec URL).
            name: the source's name (default: the file's stem).
            licence: the data's licence, stored in :meth:`provenance`.
            citation: what to cite for the data, stored in :meth:`provenance`.

        Raises:
            CrystalgridError: the file does not exist, is not readable CSV text, or lacks
                the ``material_id`` or ``cif`` column.
        """
        resolved = _resolve(path)
        if not resolved.is_file():
            raise CrystalgridError(f"not a file: {path}")
        super().__init__(resolved, name=name, licence=licence, citation=citation)
        header = self._header()
        missing = [column for column in CSV_REQUIRED if column not in header]
        if missing:
            raise CrystalgridError(
                f"{resolved}: CSV lacks the column(s) {', '.join(missing)} "
                f"(needs {', '.join(CSV_REQUIRED)})"
            )

    def _header(self) -> list[str]:
        rows = self._rows()
        try:
            return next(rows, [])
        finally:
            rows.close()

    def _rows(self) -> Generator[list[str]]:
        """Rows as lists of strings, header first; bad text becomes ``CrystalgridError``."""
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)  # CIFs in one cell exceed the 128 kB default
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as fh:
                for row in csv.reader(fh):
                    yield [cell.strip() for cell in row]
        except UnicodeDecodeError as exc:
            raise CrystalgridError(f"{self.path}: not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            raise CrystalgridError(f"{self.path}: not a readable CSV ({exc})") from None

    def records(self) -> Iterator[RawRecord | Rejected]:
        """One ``"cif"`` record per row, in file order (see the class docstring)."""
        rows = self._rows()
        header = next(rows, [])
        if not all(column in header for column in CSV_REQUIRED):
            raise CrystalgridError(f"{self.path}: CSV lacks {', '.join(CSV_REQUIRED)} (changed?)")
        id_col, cif_col = header.index("material_id"), header.index("cif")
        numeric = [
            (i, column)
            for i, column in enumerate(header)
            if column and i not in (id_col, cif_col) and not column.startswith("Unnamed:")
        ]
        seen: dict[str, int] = {}
        for number, row in enumerate(rows, start=1):
            if not any(row):
                continue  # a blank line
            origin = f"{self.path.name}:row {number}"
            material_id = row[id_col] if id_col < len(row) else ""
            cif = row[cif_col] if cif_col < len(row) else ""
            if not material_id:
                yield Rejected(origin, "no_id", f"{origin} has no material_id")
                continue
            if material_id in seen:
                yield Rejected(
                    material_id,
                    "duplicate_id",
                    f"{origin} repeats the id of row {seen[material_id]}",
                )
                continue
            seen[material_id] = number
            if not cif:
                yield Rejected(material_id, "no_structure", f"{origin} has an empty cif cell")
                continue
            properties: dict[str, Any] = {}
            for i, column in numeric:
                value = _number(row[i]) if i < len(row) else None
                if value is not None:
                    properties[column] = value
            yield RawRecord(material_id, "cif", cif, origin=origin, properties=properties)


class CsvSplitsSource(_FileSource):
    """A folder of ``train.csv``, ``val.csv`` and ``test.csv`` (the CDVAE layout of MP-20,
    perov-5 and carbon-24); every record carries its file's split.

    The files are read in that order, each as a :class:`CsvSource`; an id already seen in an
    earlier file is rejected (``duplicate_id``). A build keeps these splits (``split_by``
    ``"auto"`` or ``"source"``).
    """

    kind = "csv-splits"
    FILES = ("train.csv", "val.csv", "test.csv")

    def __init__(
        self,
        path: str | os.PathLike[str] | RemotePath,
        *,
        name: str | None = None,
        licence: str | None = None,
        citation: str | None = None,
    ) -> None:
        """Open the folder and check that the three CSVs are there and have the columns.

        Raises:
            CrystalgridError: not a folder, a CSV missing, or a CSV without the columns.
        """
        resolved = _resolve(path)
        if not resolved.is_dir():
            raise CrystalgridError(f"not a folder: {path}")
        super().__init__(resolved, name=name, licence=licence, citation=citation)
        missing = [f for f in self.FILES if not (resolved / f).is_file()]
        if missing:
            raise CrystalgridError(
                f"{resolved}: a folder of splits needs {', '.join(self.FILES)}; "
                f"{', '.join(missing)} missing"
            )
        self.parts = {f.removesuffix(".csv"): CsvSource(resolved / f) for f in self.FILES}

    def _files(self) -> list[Path | RemotePath]:
        return [part.path for part in self.parts.values()]

    def fingerprint(self) -> str:
        """SHA-256 over the three files' names and bytes."""
        return _hash_files(self._files(), names=True)

    def records(self) -> Iterator[RawRecord | Rejected]:
        """The records of train.csv, val.csv, then test.csv, each with its ``split``."""
        seen: dict[str, str] = {}
        for split, part in self.parts.items():
            for item in part.records():
                if isinstance(item, Rejected):
                    yield item
                elif item.material_id in seen:
                    yield Rejected(
                        item.material_id,
                        "duplicate_id",
                        f"{item.origin} repeats an id of {seen[item.material_id]}",
                    )
                else:
                    seen[item.material_id] = f"{split}.csv"
                    yield replace(item, split=split)


class JsonSource(_FileSource):
    """Structures in a ``.json`` or ``.json.gz`` file, or JSON Lines (``.jsonl[.gz]``: one
    record per line), read one record at a time (memory does not grow with the file).

    Accepted shapes (``structure`` is a pymatgen ``Structure.as_dict()``, or CIF text):

    - a list of records ``{"material_id": ..., "structure": {...}, ...}`` (mp_binaries);
    - a dict ``{id: record}``; the key is the id (a ``material_id`` inside is ignored);
    - a record whose ``structure`` is a list of structures (mp_elements: an element's
      polymorphs) gives one record per structure, with id ``"<id>:<index>"`` (0-based, in
      list order); every other list of the same length (``energy_per_atom``) is taken as
      per-structure values and its item becomes a property of that structure;
    - a single ``Structure`` dict (keys ``lattice`` and ``sites``) as the whole file, or as
      a record of a dict: one record, id the file's stem or the key.

    Other scalar keys of a record (str, bool, int, finite float: formula, energies ...) go
    into its properties. Records are yielded in file order. The file is read when
    :meth:`records` is called (not at construction), so a broken file is reported then, when
    the reading reaches the break; a JSON Lines line that is not JSON is a reject
    (``unreadable``) and the reading goes on.
    """

    kind = "json"

    def __init__(
        self,
        path: str | os.PathLike[str] | RemotePath,
        *,
        name: str | None = None,
        licence: str | None = None,
        citation: str | None = None,
    ) -> None:
        """Open a JSON file (read lazily).

        Args:
            path: the ``.json`` or ``.json.gz`` file (a path or an fsspec URL).
            name: the source's name (default: the file name without ``.json[.gz]``).
            licence: the data's licence, stored in :meth:`provenance`.
            citation: what to cite for the data, stored in :meth:`provenance`.

        Raises:
            CrystalgridError: the file does not exist or is not a file.
        """
        resolved = _resolve(path)
        if not resolved.is_file():
            raise CrystalgridError(f"not a file: {path}")
        super().__init__(resolved, name=name, licence=licence, citation=citation)
        self.lines = resolved.name.lower().removesuffix(".gz").endswith(".jsonl")

    @contextlib.contextmanager
    def _text(self) -> Iterator[IO[str]]:
        """The file as text (gunzipped for ``.gz``); read errors become one line."""
        compressed = self.path.name.lower().endswith(".gz")
        try:
            with self.path.open("rb") as raw:
                if compressed:
                    with gzip.open(raw, "rt", encoding="utf-8") as fh:
                        yield fh
                else:
                    with io.TextIOWrapper(raw, encoding="utf-8") as fh:
                        yield fh
        except json.JSONDecodeError as exc:
            raise CrystalgridError(
                f"{self.path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
            ) from None
        except UnicodeDecodeError as exc:
            raise CrystalgridError(f"{self.path}: not UTF-8 text ({exc.reason})") from None
        except (OSError, EOFError, zlib.error) as exc:
            what = "gzip file" if compressed else "file"
            raise CrystalgridError(f"{self.path}: not a readable {what} ({exc})") from None

    def _entries(self, fh: IO[str]) -> Iterator[tuple[str, str, Any] | Rejected]:
        """``(id, origin, item)`` of every top-level record, read one at a time."""
        name = self.path.name
        if self.lines:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                origin = f"{name}:line {number}"
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield Rejected(origin, "unreadable", f"{origin} is not valid JSON ({exc.msg})")
                    continue
                yield _list_id(item), origin, item
            return
        top = iter_json(fh)
        if top.kind == "list":
            for index, item in enumerate(top.items()):
                yield _list_id(item), f"{name}[{index}]", item
            return
        if top.kind != "object":
            kind = type(next(iter(top.items()))).__name__
            raise CrystalgridError(
                f"{self.path}: expected a JSON list or object of records, got {kind}"
            )
        pairs = top.items()
        first = next(pairs, None)
        if first is not None and first[0] in _STRUCTURE_KEYS:
            # The whole file is one Structure dict (it starts with one of its keys): small.
            data = dict([first, *pairs])
            if _is_structure_dict(data):
                yield self.name, name, data
                return
            pairs = iter(data.items())
        elif first is not None:
            pairs = itertools.chain([first], pairs)
        for key, value in pairs:
            yield str(key), f"{name}:{key}", value

    def records(self) -> Iterator[RawRecord | Rejected]:
        """The file's records in file order (see the class docstring), read one at a time.

        Raises:
            CrystalgridError: the file is not valid JSON (raised when the reading gets
                there), or holds neither a list nor an object.
        """
        seen: dict[str, str] = {}
        with self._text() as fh:
            for entry in self._entries(fh):
                if isinstance(entry, Rejected):
                    yield entry
                    continue
                material_id, origin, item = entry
                if not material_id:
                    yield Rejected(origin, "no_id", f"{origin} has no material_id")
                    continue
                for record in _expand(material_id, origin, item):
                    if record.material_id in seen:
                        yield Rejected(
                            record.material_id,
                            "duplicate_id",
                            f"{origin} repeats the id of {seen[record.material_id]}",
                        )
                        continue
                    seen[record.material_id] = origin
                    yield record


#: Keys a pymatgen ``Structure.as_dict()`` starts with (a file holding one structure).
_STRUCTURE_KEYS = ("@module", "@class", "charge", "lattice", "sites", "properties")


def _is_structure_dict(value: Any) -> bool:
    return isinstance(value, dict) and "lattice" in value and "sites" in value


def _list_id(item: Any) -> str:
    """The ``material_id`` of a list item, as a string (``""`` when there is none)."""
    if not isinstance(item, dict):
        return ""
    value = item.get("material_id")
    return "" if value is None else str(value).strip()


def _expand(material_id: str, origin: str, item: Any) -> Iterator[RawRecord | Rejected]:
    """The record(s) one JSON entry holds (see :class:`JsonSource`)."""
    if _is_structure_dict(item) and "structure" not in item:
        yield RawRecord(material_id, "dict", item, origin=origin)
        return
    if not isinstance(item, dict):
        yield Rejected(material_id, "no_structure", f"{origin} is a {type(item).__name__}")
        return
    structure = item.get("structure")
    properties = {
        key: value
        for key, value in item.items()
        if key not in ("material_id", "structure") and _is_scalar(value)
    }
    if isinstance(structure, list):
        if not structure:
            yield Rejected(material_id, "no_structure", f"{origin} has an empty structure list")
            return
        parallel = {
            key: value
            for key, value in item.items()
            if key != "structure" and isinstance(value, list) and len(value) == len(structure)
        }
        for index, each in enumerate(structure):
            extra = {
                key: value[index] for key, value in parallel.items() if _is_scalar(value[index])
            }
            yield _one(f"{material_id}:{index}", f"{origin}[{index}]", each, properties | extra)
        return
    yield _one(material_id, origin, structure, properties)


def _one(
    material_id: str, origin: str, structure: Any, properties: dict[str, Any]
) -> RawRecord | Rejected:
    if isinstance(structure, dict) and structure:
        return RawRecord(material_id, "dict", structure, origin=origin, properties=properties)
    if isinstance(structure, str) and structure.strip():
        return RawRecord(material_id, "cif", structure, origin=origin, properties=properties)
    what = (
        "no structure"
        if structure is None
        else f"an empty or unusable structure ({type(structure).__name__})"
    )
    return Rejected(material_id, "no_structure", f"{origin} has {what}")
