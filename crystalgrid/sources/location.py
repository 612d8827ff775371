"""Where a source's files are: a local path or an fsspec URL, and what the file sources share.

A URL (``s3://bucket/structures.json.gz``, a folder as ``s3://bucket/cifs/``) is opened through
:class:`RemotePath`, with credentials and endpoints from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ...), never from crystalgrid. :class:`FileSource` is the base of every
source read from files: a path, a name, a licence and a citation, a provenance that names the
format, the location and (for one file) the file's SHA-256, and a fingerprint over the bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import zlib
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import IO, TYPE_CHECKING, Any, ClassVar

from crystalgrid.errors import BadInputError, CrystalgridError, NotFoundError
from crystalgrid.remote import is_url, remote_options

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Iterator

__all__ = [
    "FileSource",
    "Location",
    "RemotePath",
    "as_number",
    "file_sha256",
    "file_stem",
    "hash_files",
    "is_scalar",
    "is_url_location",
    "location_of",
    "needs",
    "open_text",
    "plain_scalar",
    "resolve",
    "suffix_of",
]

_CHUNK = 1 << 20


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


def is_url_location(location: Any) -> bool:
    return not isinstance(location, Path) and is_url(str(location))


def resolve(path: str | os.PathLike[str] | RemotePath) -> Path | RemotePath:
    """An absolute path (or a URL's :class:`RemotePath`) that exists.

    Raises:
        NotFoundError: ``"source not found: ..."``.
    """
    if isinstance(path, RemotePath) or is_url_location(path):
        remote = path if isinstance(path, RemotePath) else RemotePath(str(path))
        if not remote.exists():
            raise NotFoundError(f"source not found: {path}")
        return remote
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise NotFoundError(f"source not found: {path}")
    return resolved


def hash_files(paths: Iterable[Path | RemotePath], *, names: bool) -> str:
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


def as_number(text: str | None) -> int | float | None:
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


def plain_scalar(value: Any) -> Any:
    """A numpy scalar as the Python scalar it holds; anything else as is."""
    import numpy as np

    return value.item() if isinstance(value, np.generic) else value


def is_scalar(value: Any) -> bool:
    """True for str, bool, int and finite float values (what properties may hold)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | bool | int)


#: A source's place: a local path or a URL's :class:`RemotePath`.
Location = Path | RemotePath


def location_of(location: str | os.PathLike[str] | RemotePath) -> Location:
    """``location`` as a :class:`~pathlib.Path` (``~`` expanded) or a :class:`RemotePath`
    (an fsspec URL); nothing is checked."""
    if isinstance(location, RemotePath):
        return location
    if is_url_location(location):
        return RemotePath(str(location))
    return Path(location).expanduser()


def file_sha256(path: Location) -> str:
    """The SHA-256 (hex) of a local file's bytes; for a URL, its size and the store's checksum
    (``"remote:<size>:<etag>"``: the bytes are not downloaded to hash them)."""
    if isinstance(path, RemotePath):
        return f"remote:{path.version_token()}"
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def suffix_of(path: Location) -> str:
    """The lower-case name of ``path`` without a trailing ``.gz`` (``a.XYZ.gz``: ``a.xyz``)."""
    return path.name.lower().removesuffix(".gz")


@contextlib.contextmanager
def open_text(path: Location) -> Iterator[IO[str]]:
    """A file as UTF-8 text, gunzipped when its name ends in ``.gz``, read as a stream; a
    file that is not text or not readable is one line.

    Raises:
        BadInputError: not UTF-8, not a readable (gzip) file.
    """
    compressed = path.name.lower().endswith(".gz")
    try:
        with path.open("rb") as raw:
            if compressed:
                with gzip.open(raw, "rt", encoding="utf-8") as fh:
                    yield fh
            else:
                with io.TextIOWrapper(raw, encoding="utf-8") as fh:
                    yield fh
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except (OSError, EOFError, zlib.error) as exc:
        what = "gzip file" if compressed else "file"
        raise BadInputError(f"{path}: not a readable {what} ({exc})") from None


def needs(module: str, extra: str, what: str) -> Any:
    """Import ``module`` for a source, or raise one line naming the extra to install.

    Raises:
        CrystalgridError: the module is not installed.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CrystalgridError(
            f"reading {what} needs the {module.split('.')[0]} package: "
            f"pip install 'crystalgrid[{extra}]'"
        ) from None


class FileSource:
    """The base of the sources read from files: a path, a name, a licence and a citation.

    A subclass is one format (a plug-in of :func:`crystalgrid.sources.open_source`): it sets
    ``kind`` (stored in the dataset's provenance) and ``describes`` (for messages), says
    whether it can open a location with :meth:`can_open` (by names only: cheap, no package
    needed), and is made with ``cls(location, name=, licence=, citation=)``.
    """

    #: The format's name, stored in provenance (``"cif_directory"``, ``"extxyz"``, ...).
    kind: ClassVar[str] = ""
    #: What the format looks like on disk, for messages (``"a .cif file"``).
    describes: ClassVar[str] = ""

    #: ``"file"`` or ``"directory"`` where the format is only one of them (checked on opening).
    expects: ClassVar[str | None] = None
    #: ``(module, extra, what)`` of the optional package the format needs, checked first.
    requires: ClassVar[tuple[str, str, str] | None] = None

    def __init__(
        self,
        path: str | os.PathLike[str] | Path | RemotePath,
        *,
        name: str | None = None,
        licence: str | None = None,
        citation: str | None = None,
    ) -> None:
        """Open ``path`` (a local path or an fsspec URL) as this format.

        Args:
            path: the file or folder.
            name: the source's name (default: the file's name without its extensions).
            licence: the data's licence, stored in :meth:`provenance`.
            citation: what to cite for the data, stored in :meth:`provenance`.

        Raises:
            CrystalgridError: the package the format needs is missing (names its extra).
            NotFoundError: the path does not exist.
            BadInputError: a file where the format needs a directory or the reverse, or what
                :meth:`_check` refuses.
        """
        if self.requires is not None:
            needs(*self.requires)
        resolved = resolve(path)
        if self.expects == "file" and not resolved.is_file():
            raise BadInputError(f"not a file: {path}")
        if self.expects == "directory" and not resolved.is_dir():
            raise BadInputError(f"not a directory: {path}")
        self.path = resolved
        self.name = name if name is not None else file_stem(resolved)
        self.licence = licence
        self.citation = citation
        self._file_digest: str | None = None
        self._check()

    def _check(self) -> None:
        """Refuse, once the path is set, a location the format cannot read (a folder without
        its files, a table without its columns); nothing by default.

        Raises:
            BadInputError: naming what is missing.
        """

    @classmethod
    def can_open(cls, path: Location) -> bool:
        """Whether ``path`` (which exists) looks like this format; by names only."""
        return False

    @classmethod
    def from_location(cls, path: Location, **kw: Any) -> Any:
        """Open ``path`` as this format (``kw``: ``name``, ``licence``, ``citation``)."""
        return cls(path, **kw)

    def _files(self) -> list[Path | RemotePath]:
        return [self.path]

    def provenance(self) -> dict[str, Any]:
        """Where the records come from: kind, absolute location, file count, licence,
        citation, and for a single file its ``sha256`` (a URL's: its size and checksum)."""
        files = self._files()
        info: dict[str, Any] = {
            "kind": self.kind,
            "location": str(self.path),
            "files": len(files),
            "licence": self.licence,
            "citation": self.citation,
        }
        if len(files) == 1 and files[0] == self.path:
            if self._file_digest is None:
                self._file_digest = file_sha256(self.path)
            key = "checksum" if isinstance(self.path, RemotePath) else "sha256"
            info[key] = self._file_digest
        return info

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the source file's bytes."""
        return hash_files(self._files(), names=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


def file_stem(path: Path | RemotePath) -> str:
    """A file's name without ``.json.gz`` / ``.csv`` / ... (a directory's name as is)."""
    if path.is_dir():
        return path.name
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem
