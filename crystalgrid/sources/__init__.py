"""Sources of crystal structures, and :func:`open_source` to pick one from a location.

- :class:`DemoSource`: the demo collection shipped inside pymatgen (no location needed).
- :class:`CifDirectorySource`: a directory of ``*.cif`` (CGCNN folders included).
- :class:`CifFileSource`: a single ``.cif`` file.
- :class:`CsvSource`: a CSV with ``material_id`` and ``cif`` columns (CDVAE / MP-20).
- :class:`CsvSplitsSource`: a folder of ``train.csv``, ``val.csv``, ``test.csv`` (CDVAE's
  benchmarks), whose records carry their split.
- :class:`JsonSource`: a ``.json`` / ``.json.gz`` list or dict of structure records, or JSON
  Lines (``.jsonl[.gz]``), read one record at a time.
- :class:`CollectionSource`: a crystalgrid collection (a directory with ``collection.json``,
  written by ``crystalgrid fetch``), opened with :func:`open_collection`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystalgrid.errors import CrystalgridError, NotFoundError
from crystalgrid.remote import remote_errors
from crystalgrid.sources import collection
from crystalgrid.sources.base import RawRecord, Rejected, Source, parse_record
from crystalgrid.sources.collection import CollectionSource, open_collection
from crystalgrid.sources.demo import DemoSource
from crystalgrid.sources.files import (
    CifDirectorySource,
    CifFileSource,
    CsvSource,
    CsvSplitsSource,
    JsonSource,
    RemotePath,
    _is_url,
)

if TYPE_CHECKING:
    import os

__all__ = [
    "CifDirectorySource",
    "CifFileSource",
    "CollectionSource",
    "CsvSource",
    "CsvSplitsSource",
    "DemoSource",
    "JsonSource",
    "RawRecord",
    "Rejected",
    "RemotePath",
    "Source",
    "open_collection",
    "open_source",
    "parse_record",
]

#: What :func:`open_source` accepts, for messages.
ACCEPTED = (
    "a directory of .cif files, a crystalgrid collection (directory with collection.json), "
    "a folder of train.csv, val.csv and test.csv, "
    "a .cif, .csv, .json, .json.gz, .jsonl or .jsonl.gz file, or nothing for the demo collection"
)


def open_source(location: str | os.PathLike[str] | None, **kw: Any) -> Source:
    """The source for a location, chosen by what it is.

    Args:
        location: ``None`` for :class:`DemoSource`; a directory holding ``collection.json``
            (a crystalgrid collection); a directory holding ``train.csv``
            (:class:`CsvSplitsSource`); another directory (:class:`CifDirectorySource`); a
            ``.cif`` (:class:`CifFileSource`), ``.csv`` (:class:`CsvSource`), ``.json``,
            ``.json.gz``, ``.jsonl`` or ``.jsonl.gz`` file (:class:`JsonSource`). Extensions
            are matched case-insensitively.
            An fsspec URL (``s3://bucket/structures.json.gz``, ``s3://bucket/cifs/``) is
            dispatched the same way, read through fsspec with credentials from the
            environment; a collection by URL is not supported (copy it to a local folder).
        **kw: passed to the source's constructor (e.g. ``licence=``, ``citation=``).

    Returns:
        A :class:`Source`.

    Raises:
        CrystalgridError: ``"source not found: ..."`` when the path does not exist, or a
            message naming the accepted kinds for an unknown file type.
    """
    if location is None:
        return DemoSource(**kw)
    with remote_errors(location):
        return _open_source(location, **kw)


def _open_source(location: str | os.PathLike[str], **kw: Any) -> Source:
    url = _is_url(location)
    path = RemotePath(str(location)) if url else Path(location).expanduser()
    if not path.exists():
        raise NotFoundError(f"source not found: {location}")
    if path.is_dir():
        if (path / "collection.json").is_file():
            if isinstance(path, RemotePath):
                raise CrystalgridError(
                    f"{location} is a crystalgrid collection: read by URL it is not supported; "
                    "copy it to a local folder first"
                )
            return collection.open_collection(path, **kw)
        if (path / "train.csv").is_file():
            return CsvSplitsSource(path, **kw)
        return CifDirectorySource(path, **kw)
    name = path.name.lower()
    if name.endswith(".cif"):
        return CifFileSource(path, **kw)
    if name.endswith(".csv"):
        return CsvSource(path, **kw)
    if name.endswith((".json", ".json.gz", ".jsonl", ".jsonl.gz")):
        return JsonSource(path, **kw)
    raise CrystalgridError(f"unknown source type: {location} (accepted: {ACCEPTED})")
