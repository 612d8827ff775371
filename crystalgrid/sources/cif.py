"""CIF sources: a directory of ``*.cif`` files (CGCNN folders included) and a single CIF.

Records are the CIF text, parsed later by :func:`~crystalgrid.sources.base.parse_record`; the
id is the file's stem. A file that cannot be read as UTF-8 is a reject (``"unreadable"``), an
empty one ``"no_structure"``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystalgrid.errors import BadInputError
from crystalgrid.sources.base import RawRecord, Rejected
from crystalgrid.sources.location import (
    FileSource,
    Location,
    RemotePath,
    as_number,
    hash_files,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["CifDirectorySource", "CifFileSource"]

#: Name of the CGCNN targets file inside a CIF directory.
ID_PROP = "id_prop.csv"
#: CIF files fetched together from a URL folder (concurrently, by async filesystems).
_CIF_BATCH = 64


class _CifSource(FileSource):
    """What the two CIF sources share: records, provenance and fingerprint of their files."""

    def _cif_files(self) -> list[Path | RemotePath]:
        return [self.path]

    def _id_prop(self) -> Path | RemotePath | None:
        return None

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
            raise BadInputError(f"{id_prop}: not a readable CSV ({exc})") from None
        targets: dict[str, float] = {}
        for row in rows:
            if len(row) < 2:
                continue
            value = as_number(row[1])
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
        return hash_files(self._files(), names=True)


class CifDirectorySource(_CifSource):
    """Every ``*.cif`` file of a directory, sorted by file name; the id is the file's stem.

    A CGCNN-style directory works as is: if it holds ``id_prop.csv`` (rows ``id,target``,
    no header), the second column becomes the property ``{"target": float}`` of the CIF
    with that id; CIFs without a row get no property, rows without a CIF are ignored.
    """

    kind = "cif_directory"
    describes = "a directory of .cif files (a CGCNN folder with id_prop.csv too)"

    @classmethod
    def can_open(cls, path: Location) -> bool:
        return path.is_dir() and any(
            p.suffix.lower() == ".cif" and p.is_file() for p in path.iterdir()
        )

    expects = "directory"

    def _check(self) -> None:
        if not self._cif_files():
            raise BadInputError(f"no .cif files in {self.path}")

    def _cif_files(self) -> list[Path | RemotePath]:
        files = (p for p in self.path.iterdir() if p.suffix.lower() == ".cif" and p.is_file())
        return sorted(files, key=lambda p: p.name)

    def _id_prop(self) -> Path | RemotePath | None:
        candidate = self.path / ID_PROP
        return candidate if candidate.is_file() else None


class CifFileSource(_CifSource):
    """One CIF file as a source of one record (id: the file's stem)."""

    kind = "cif_file"
    describes = "a .cif file"

    @classmethod
    def can_open(cls, path: Location) -> bool:
        return path.is_file() and path.name.lower().endswith(".cif")

    expects = "file"


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
