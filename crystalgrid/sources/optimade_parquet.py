"""Parquet with OPTIMADE field names (LeMat-Bulk's layout): one ``.parquet`` file, or a folder of
shards read in name order, local or by URL; streamed in row batches, so memory stays flat
whatever the number of rows.

Fields read (OPTIMADE's names): ``lattice_vectors`` (3 rows, Å), ``species_at_sites`` (a
species name per site), ``cartesian_site_positions`` (Å), and ``species`` (each name's
``chemical_symbols`` and ``concentration``) where present; without ``species`` the names are
taken as element symbols. The id is ``immutable_id`` (else ``id``, else
``"<shard stem>:<row>"``). Every other column whose value is a number, a boolean or a string
(``energy``, ``nsites``, ``functional``, ``chemical_formula_reduced``, ...) becomes a property.

Rejects: ``"disordered"`` for a site species of several symbols or a concentration below 1
(partial occupancy), ``"unparsable"`` for arrays of mismatched lengths, ``"no_cell"`` for
missing lattice vectors, ``"duplicate_id"``; a shard that cannot be read is one
``"unreadable"`` reject naming the shard (its rows are not in the dataset) and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crystalgrid.errors import BadInputError, RejectedStructure
from crystalgrid.sources.base import RawRecord, Rejected
from crystalgrid.sources.location import (
    FileSource,
    Location,
    RemotePath,
    file_stem,
    hash_files,
    is_scalar,
    location_of,
    needs,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["STRUCTURE_FIELDS", "OptimadeParquetSource", "ParquetPart", "optimade_symbols"]

#: The OPTIMADE fields that make a structure.
STRUCTURE_FIELDS = ("lattice_vectors", "species_at_sites", "cartesian_site_positions")
#: Columns that hold the id, looked for in this order.
ID_FIELDS = ("immutable_id", "id")
#: Rows read at once from a shard.
BATCH_ROWS = 1024


def _is_parquet(path: Location) -> bool:
    return path.name.lower().endswith(".parquet")


class OptimadeParquetSource(FileSource):
    """Structures from Parquet rows with OPTIMADE fields; see the module docstring."""

    kind = "optimade_parquet"
    describes = "a .parquet file with OPTIMADE fields, or a folder of such shards"

    @classmethod
    def can_open(cls, path: Location) -> bool:
        if path.is_dir():
            return any(_is_parquet(p) and p.is_file() for p in path.iterdir())
        return _is_parquet(path)

    requires = ("pyarrow.parquet", "parquet", "Parquet")

    def _check(self) -> None:
        shards = self._files()
        if not shards:
            raise BadInputError(f"no .parquet files in {self.path}")
        try:
            with shards[0].open("rb") as fh:
                missing = _missing_fields(_parquet().ParquetFile(fh))
        except (OSError, ValueError) as exc:
            raise BadInputError(f"{shards[0]}: not a readable Parquet file ({exc})") from None
        if missing:
            raise BadInputError(
                f"{shards[0]}: Parquet lacks the OPTIMADE field(s) {', '.join(missing)} "
                f"(needs {', '.join(STRUCTURE_FIELDS)})"
            )

    def _files(self) -> list[Path | RemotePath]:
        if not self.path.is_dir():
            return [self.path]
        return sorted(
            (p for p in self.path.iterdir() if _is_parquet(p) and p.is_file()),
            key=lambda p: p.name,
        )

    def fingerprint(self) -> str:
        """SHA-256 over the shards' names and bytes (a URL's: size and checksum)."""
        return hash_files(self._files(), names=True)

    def records(self) -> Iterator[RawRecord | Rejected]:
        """One ``"sites"`` record per row, shard by shard, row by row."""
        seen: set[str] = set()
        for shard in self._files():
            for item in self._rows(shard):
                if isinstance(item, RawRecord):
                    if item.material_id in seen:
                        item = Rejected(
                            item.material_id, "duplicate_id", f"{item.origin} repeats an id"
                        )
                    else:
                        seen.add(item.material_id)
                yield item

    def partitions(self) -> list[ParquetPart]:
        """One part per row group of each shard, in order (each shard's footer is read here;
        a shard whose footer cannot be read is one part that yields its reject)."""
        parts: list[ParquetPart] = []
        for shard in self._files():
            try:
                with shard.open("rb") as fh:
                    meta = _parquet().ParquetFile(fh).metadata
                sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            except (OSError, ValueError) as exc:
                parts.append(ParquetPart(str(shard), -1, 0, f"{exc}"))
                continue
            first = 0
            for index, rows in enumerate(sizes):
                parts.append(ParquetPart(str(shard), index, first))
                first += rows
        return parts

    def _rows(self, shard: Location) -> Iterator[RawRecord | Rejected]:
        stem = file_stem(shard)
        number = 0
        try:
            with shard.open("rb") as fh:
                reader = _parquet().ParquetFile(fh)
                missing = _missing_fields(reader)
                if missing:
                    yield _lacks(shard, missing)
                    return
                for batch in reader.iter_batches(batch_size=BATCH_ROWS):
                    for row in batch.to_pylist():
                        yield _record(row, f"{shard.name}:row {number}", f"{stem}:{number}")
                        number += 1
        except (OSError, ValueError) as exc:
            yield Rejected(
                shard.name,
                "unreadable",
                f"{shard.name} could not be read after row {number} ({exc}); "
                "its remaining rows are left out",
            )


def _parquet() -> Any:
    """``pyarrow.parquet`` (the extra is checked when a source is opened)."""
    return needs("pyarrow.parquet", "parquet", "Parquet")


def _missing_fields(reader: Any) -> list[str]:
    """The structure fields a shard's schema lacks."""
    names = set(reader.schema_arrow.names)
    return [f for f in STRUCTURE_FIELDS if f not in names]


def _lacks(shard: Location, missing: list[str]) -> Rejected:
    """The one reject of a shard without the structure fields (its rows are left out)."""
    return Rejected(
        shard.name, "unreadable", f"{shard.name} lacks {', '.join(missing)}; its rows are left out"
    )


def _record(row: dict[str, Any], origin: str, fallback_id: str) -> RawRecord | Rejected:
    """The record of one row (see the module docstring)."""
    material_id = next(
        (str(row[k]).strip() for k in ID_FIELDS if row.get(k) not in (None, "")), fallback_id
    )
    names = row.get("species_at_sites")
    if not names:
        return Rejected(material_id, "no_structure", f"{origin} has no species_at_sites")
    try:
        symbols = optimade_symbols(row)
    except RejectedStructure as exc:
        return Rejected(material_id, exc.reason, f"{origin}: {exc.detail}")
    payload = {
        "lattice": row.get("lattice_vectors"),
        "species": [symbols.get(n, n) for n in names],
        "coords": row.get("cartesian_site_positions") or [],
    }
    skip = {*STRUCTURE_FIELDS, *ID_FIELDS, "species"}
    properties = {k: v for k, v in row.items() if k not in skip and is_scalar(v)}
    return RawRecord(material_id, "sites", payload, origin=origin, properties=properties)


def optimade_symbols(fields: dict[str, Any]) -> dict[str, str]:
    """``{species name: element symbol}`` from OPTIMADE's ``species`` field (``{}`` without one).

    Raises:
        RejectedStructure: ``"disordered"`` for a species of several symbols, a vacancy, or a
            concentration below 1 (partial occupancy).
    """
    symbols: dict[str, str] = {}
    for species in fields.get("species") or []:
        chemical = list(species.get("chemical_symbols") or [])
        concentration = list(species.get("concentration") or [1.0] * len(chemical))
        if len(chemical) != 1 or chemical[0] == "vacancy" or min(concentration, default=1) < 1:
            raise RejectedStructure(
                "disordered",
                f"species {species.get('name')!r} is {chemical} at {concentration} "
                "(partial occupancy)",
            )
        symbols[str(species.get("name"))] = chemical[0]
    return symbols


@dataclass(frozen=True)
class ParquetPart:
    """One row group of one shard, read where the build runs it (picklable: a location string).

    Attributes:
        location: the shard (a path or a URL).
        row_group: the row group's index (``-1``: the shard's footer could not be read).
        first_row: the shard's row number of the group's first row (for fallback ids).
        error: why the footer could not be read.
    """

    location: str
    row_group: int
    first_row: int
    error: str = ""

    def records(self) -> Iterator[RawRecord | Rejected]:
        """The group's records, as :meth:`OptimadeParquetSource.records` gives them (without
        the check for ids repeated across groups)."""
        shard = location_of(self.location)
        if self.row_group < 0:
            yield Rejected(
                shard.name,
                "unreadable",
                f"{shard.name} could not be read ({self.error}); its rows are left out",
            )
            return
        pq = _parquet()
        stem = file_stem(shard)
        try:
            with shard.open("rb") as fh:
                reader = pq.ParquetFile(fh)
                missing = _missing_fields(reader)
                if missing:
                    yield _lacks(shard, missing)
                    return
                rows = reader.read_row_group(self.row_group).to_pylist()
        except (OSError, ValueError) as exc:
            yield Rejected(
                f"{shard.name}:group {self.row_group}",
                "unreadable",
                f"{shard.name}: row group {self.row_group} could not be read ({exc}); "
                "its rows are left out",
            )
            return
        for offset, row in enumerate(rows):
            number = self.first_row + offset
            yield _record(row, f"{shard.name}:row {number}", f"{stem}:{number}")
