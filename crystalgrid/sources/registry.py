"""Which source opens a location: every format in :data:`FORMATS` is asked in turn.

A format is a class with ``kind``, ``describes``, ``can_open(path)`` (by names only; cheap)
and ``from_location(path, **kw)``; :class:`~crystalgrid.sources.location.FileSource`
provides the last. Formats from other packages join through :func:`register_format` or the
``crystalgrid.sources`` entry-point group (each entry point names such a class).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from crystalgrid.errors import BadInputError, CrystalgridError, NotFoundError
from crystalgrid.remote import remote_errors
from crystalgrid.sources.ase_db import AseDbSource
from crystalgrid.sources.cdvae_csv import CsvSource, CsvSplitsSource
from crystalgrid.sources.cif import CifDirectorySource, CifFileSource
from crystalgrid.sources.collection import CollectionSource
from crystalgrid.sources.demo import DemoSource
from crystalgrid.sources.extxyz import ExtxyzSource
from crystalgrid.sources.json_records import JsonSource
from crystalgrid.sources.location import location_of
from crystalgrid.sources.optimade_parquet import OptimadeParquetSource
from crystalgrid.sources.poscar import PoscarSource

if TYPE_CHECKING:
    import os

    from crystalgrid.sources.base import Source

__all__ = ["ENTRY_POINT_GROUP", "FORMATS", "formats", "open_source", "register_format"]

#: The formats crystalgrid ships, in the order they are asked (folders with a marker file
#: first, then by the files a folder holds or a file's name).
FORMATS: list[type] = [
    CollectionSource,
    CsvSplitsSource,
    CifDirectorySource,
    CifFileSource,
    CsvSource,
    JsonSource,
    ExtxyzSource,
    PoscarSource,
    AseDbSource,
    OptimadeParquetSource,
]

#: The entry-point group other packages list their source formats under.
ENTRY_POINT_GROUP = "crystalgrid.sources"


def register_format(format_class: type, *, first: bool = False) -> None:
    """Add a source format (asked last, or first with ``first=True``).

    Raises:
        BadInputError: the class lacks ``kind``, ``describes``, ``can_open`` or
            ``from_location``.
    """
    missing = [
        a
        for a in ("kind", "describes", "can_open", "from_location")
        if not hasattr(format_class, a)
    ]
    if missing:
        raise BadInputError(
            f"{format_class.__name__} is not a source format: no {', '.join(missing)}"
        )
    if format_class in FORMATS:
        return
    FORMATS.insert(0, format_class) if first else FORMATS.append(format_class)


_LOADED: set[str] = set()


def formats() -> list[type]:
    """Every format asked by :func:`open_source`, in order: shipped, registered, then the
    entry points' (each loaded once).

    Raises:
        CrystalgridError: an entry point that cannot be loaded (named, in one line).
    """
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in _LOADED:
            continue
        try:
            format_class = point.load()
        except (ImportError, AttributeError) as exc:
            raise CrystalgridError(
                f"the source format {point.name!r} ({point.value}) does not load: {exc}"
            ) from None
        register_format(format_class)
        _LOADED.add(point.name)
    return list(FORMATS)


def accepted() -> str:
    """What :func:`open_source` accepts, in one line, for messages."""
    kinds = [str(getattr(f, "describes", f.__name__)) for f in formats()]
    return "; ".join(kinds) + "; or nothing for the demo collection"


def open_source(location: str | os.PathLike[str] | None, **kw: Any) -> Source:
    """The source for a location: the first format of :func:`formats` that can open it.

    Args:
        location: ``None`` for :class:`DemoSource`; else a path or an fsspec URL
            (``s3://bucket/structures.json.gz``, a folder as ``s3://bucket/cifs/``), read
            through fsspec with credentials from the environment. See
            :data:`FORMATS` for what each format recognises (names matched case-insensitively).
        **kw: passed to the source (``name=``, ``licence=``, ``citation=``).

    Raises:
        NotFoundError: ``"source not found: ..."`` when the location does not exist.
        BadInputError: no format can open it (the message names every format tried).
    """
    if location is None:
        return DemoSource(**kw)
    with remote_errors(location):
        path = location_of(location)
        if not path.exists():
            raise NotFoundError(f"source not found: {location}")
        for format_class in formats():
            if format_class.can_open(path):  # type: ignore[attr-defined]
                return format_class.from_location(path, **kw)  # type: ignore[attr-defined]
        raise BadInputError(f"no source format can open {location} (tried: {accepted()})")
