"""An ASE database file (``*.db``, SQLite), read row by row in row-id order.

A row's id is its ``unique_id`` (ASE gives every row one); set ``id_key`` to use a key-value
column of your own (``mp_id``) instead, rows without it falling back to ``unique_id``. Its
key-value pairs and calculated scalars (``energy``, ``free_energy``, ``magmom``)
become properties. A row that is not periodic, or has a zero cell, is a reject (``"no_cell"``).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from crystalgrid.errors import BadInputError
from crystalgrid.sources.base import RawRecord, Rejected
from crystalgrid.sources.location import (
    FileSource,
    Location,
    RemotePath,
    is_scalar,
    needs,
    plain_scalar,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator

__all__ = ["AseDbSource"]

#: Calculated values of a row kept as properties when present.
CALCULATED = ("energy", "free_energy", "magmom")


class AseDbSource(FileSource):
    """The rows of an ASE SQLite database; see the module docstring."""

    kind = "ase_db"
    describes = "an ASE database file (.db)"

    @classmethod
    def can_open(cls, path: Location) -> bool:
        return path.is_file() and path.name.lower().endswith(".db")

    requires = ("ase.db", "ase", "an ASE database")

    def __init__(
        self,
        path: str | os.PathLike[str] | RemotePath,
        *,
        id_key: str | None = None,
        **kw: Any,
    ) -> None:
        """Open an ASE database (local: SQLite cannot read a URL).

        Args:
            id_key: a key-value column that holds the ids (default: ASE's ``unique_id``).
            **kw: ``name``, ``licence``, ``citation`` (:class:`FileSource`).

        Raises:
            BadInputError: a URL, or a file that is not an ASE database.
        """
        if isinstance(path, RemotePath) or "://" in str(path):
            raise BadInputError(f"{path}: an ASE database is read locally; copy it here first")
        self.id_key = id_key
        super().__init__(path, **kw)

    def _check(self) -> None:
        try:
            self._count = int(self._connect().count())
        except (sqlite3.DatabaseError, OSError, ValueError, KeyError) as exc:
            raise BadInputError(f"{self.path}: not a readable ASE database ({exc})") from None

    def _connect(self) -> Any:
        return needs(*self.requires).connect(str(self.path), type="db", create_indices=False)

    def __len__(self) -> int:
        """The number of rows."""
        return self._count

    def provenance(self) -> dict[str, Any]:
        """As every file source's, plus the row count and the id column."""
        return {**super().provenance(), "rows": self._count, "id_key": self.id_key or "unique_id"}

    def records(self) -> Iterator[RawRecord | Rejected]:
        """One ``"sites"`` record per row, in row-id order."""
        seen: dict[str, str] = {}
        for row in self._connect().select(sort="id"):
            origin = f"{self.path.name}:row {row.id}"
            pairs = dict(row.key_value_pairs)
            chosen = pairs.get(self.id_key) if self.id_key else None
            material_id = str(chosen if chosen not in (None, "") else row.unique_id)
            if material_id in seen:
                yield Rejected(
                    material_id, "duplicate_id", f"{origin} repeats the id of {seen[material_id]}"
                )
                continue
            seen[material_id] = origin
            properties = {
                key: plain_scalar(value)
                for key, value in pairs.items()
                if key != self.id_key and is_scalar(plain_scalar(value))
            }
            for key in CALCULATED:
                value = row.get(key)
                if value is not None and is_scalar(plain_scalar(value)):
                    properties[key] = plain_scalar(value)
            payload = {
                "lattice": row.cell.tolist() if bool(row.pbc.any()) else None,
                "species": [int(z) for z in row.numbers],
                "coords": row.positions.tolist(),
            }
            yield RawRecord(material_id, "sites", payload, origin=origin, properties=properties)
