"""CSV sources in the CDVAE / MP-20 layout: one CSV with ``material_id`` and ``cif`` columns, or
a folder of ``train.csv``, ``val.csv`` and ``test.csv`` whose records carry their split.

Rows are yielded in file order; problems of one row are rejects (``"no_id"``, ``"duplicate_id"``,
``"no_structure"``), problems of the whole file one-line errors.
"""

from __future__ import annotations

import csv
import functools
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystalgrid.errors import BadInputError, IntegrityError
from crystalgrid.sources.base import RawRecord, Rejected
from crystalgrid.sources.location import (
    FileSource,
    Location,
    RemotePath,
    as_number,
    hash_files,
)

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

__all__ = ["CSV_REQUIRED", "CsvSource", "CsvSplitsSource"]

#: Columns a CSV source must have (the CDVAE / MP-20 layout).
CSV_REQUIRED = ("material_id", "cif")

_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


class CsvSource(FileSource):
    """A CSV with ``material_id`` and ``cif`` columns (the CDVAE / MP-20 layout).

    Rows are yielded in file order. Every other column whose value in a row is a finite
    number goes into that record's properties (ints stay ints); text, empty cells, NaN and
    unnamed columns (a pandas index) are left out.
    """

    kind = "csv"
    describes = "a .csv file with material_id and cif columns"

    @classmethod
    def can_open(cls, path: Location) -> bool:
        return path.is_file() and path.name.lower().endswith(".csv")

    expects = "file"

    def _check(self) -> None:
        header = self._header()
        missing = [column for column in CSV_REQUIRED if column not in header]
        if missing:
            raise BadInputError(
                f"{self.path}: CSV lacks the column(s) {', '.join(missing)} "
                f"(needs {', '.join(CSV_REQUIRED)})"
            )

    def _header(self) -> list[str]:
        rows = self._rows()
        try:
            return next(rows, [])
        finally:
            rows.close()

    def _rows(self) -> Generator[list[str]]:
        """Rows as lists of strings, header first; bad text becomes ``BadInputError``."""
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)  # CIFs in one cell exceed the 128 kB default
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as fh:
                for row in csv.reader(fh):
                    yield [cell.strip() for cell in row]
        except UnicodeDecodeError as exc:
            raise BadInputError(f"{self.path}: not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            raise BadInputError(f"{self.path}: not a readable CSV ({exc})") from None

    def records(self) -> Iterator[RawRecord | Rejected]:
        """One ``"cif"`` record per row, in file order (see the class docstring)."""
        rows = self._rows()
        header = next(rows, [])
        if not all(column in header for column in CSV_REQUIRED):
            raise IntegrityError(f"{self.path}: CSV lacks {', '.join(CSV_REQUIRED)} (changed?)")
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
                value = as_number(row[i]) if i < len(row) else None
                if value is not None:
                    properties[column] = value
            yield RawRecord(material_id, "cif", cif, origin=origin, properties=properties)


class CsvSplitsSource(FileSource):
    """A folder of ``train.csv``, ``val.csv`` and ``test.csv`` (the CDVAE layout of MP-20,
    perov-5 and carbon-24); every record carries its file's split.

    The files are read in that order, each as a :class:`CsvSource`; an id already seen in an
    earlier file is rejected (``duplicate_id``). A build keeps these splits (``split_by``
    ``"auto"`` or ``"source"``).
    """

    kind = "csv-splits"
    describes = "a folder of train.csv, val.csv and test.csv"
    FILES = ("train.csv", "val.csv", "test.csv")

    @classmethod
    def can_open(cls, path: Location) -> bool:
        return path.is_dir() and (path / "train.csv").is_file()

    expects = "directory"

    def _check(self) -> None:
        missing = [f for f in self.FILES if not (self.path / f).is_file()]
        if missing:
            raise BadInputError(
                f"{self.path}: a folder of splits needs {', '.join(self.FILES)}; "
                f"{', '.join(missing)} missing"
            )
        self.parts  # noqa: B018 - each CSV's columns checked now, not at the first read

    @functools.cached_property
    def parts(self) -> dict[str, CsvSource]:
        """``{split: its CsvSource}``, in the order train, val, test."""
        return {f.removesuffix(".csv"): CsvSource(self.path / f) for f in self.FILES}

    def _files(self) -> list[Path | RemotePath]:
        return [part.path for part in self.parts.values()]

    def fingerprint(self) -> str:
        """SHA-256 over the three files' names and bytes."""
        return hash_files(self._files(), names=True)

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
