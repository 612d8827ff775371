"""What every source of structures yields: raw records, parsed later where the work runs.

A source lists its records cheaply (an id and an undecoded payload) in a fixed order; the
expensive part, turning a payload into a pymatgen ``Structure``, is :func:`parse_record`, run
in parallel by the build. A record that cannot even be listed (an unreadable file, a CSV row
with no CIF) is yielded as a :class:`Rejected` so that it is recorded with its reason.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from crystalgrid.errors import RejectedStructure

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pymatgen.core import Structure

__all__ = ["RawRecord", "Rejected", "Source", "parse_record"]

#: What a record's payload holds: CIF text, a ``Structure.as_dict()``, arrays (``"sites"``:
#: ``{"lattice": (3, 3) Å rows, "species": symbols or Z, "coords": (n, 3) Cartesian Å}``), or
#: the text of one extended-XYZ frame or one POSCAR file.
PayloadKind = Literal["cif", "dict", "sites", "extxyz", "poscar"]


@dataclass(frozen=True)
class RawRecord:
    """One structure, not yet parsed.

    Attributes:
        material_id: the id the dataset will carry (e.g. ``"mp-149"``, a CIF file's stem).
        kind: what the payload is (see ``PayloadKind``): ``"cif"`` text, a ``"dict"`` of
            ``Structure.as_dict()``, ``"sites"`` arrays, ``"extxyz"`` or ``"poscar"`` text.
        payload: the text or the dict.
        origin: where it came from, for messages (a path, ``file.csv:row 12``).
        properties: scalar properties that travel with the structure (formation energy, ...).
        split: the split the source puts it in (``"train"``, ``"val"``, ``"test"``), if any.
    """

    material_id: str
    kind: PayloadKind
    payload: str | dict[str, Any]
    origin: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    split: str | None = None


@dataclass(frozen=True)
class Rejected:
    """A record dropped before parsing, with its reason (see ``RejectedStructure``)."""

    material_id: str
    reason: str
    detail: str = ""


class Source(Protocol):
    """A collection of structures: ordered, re-iterable, with provenance.

    ``records()`` must yield the same records in the same order every time it is called
    (builds are deterministic and resumable). ``provenance()`` describes where the data
    came from (``{"kind", "location", "licence", "citation", ...}``) and ``fingerprint()``
    is a hex digest that changes whenever the records would.

    A source may also offer ``partitions()``: picklable parts, each with a ``records()`` of
    its own, that together yield ``records()`` in order (ids repeated across parts are left
    to the build, which keeps the first). A build then reads each part on a worker, so the
    driver never lists the records (:class:`~crystalgrid.sources.OptimadeParquetSource`:
    one part per row group of each shard).
    """

    name: str

    def records(self) -> Iterator[RawRecord | Rejected]: ...

    def provenance(self) -> dict[str, Any]: ...

    def fingerprint(self) -> str: ...


def parse_record(record: RawRecord) -> Structure:
    """Parse a record's payload into a ``Structure``.

    Raises:
        RejectedStructure: ``"unparsable"`` with the parser's message as detail,
            ``"no_structure"`` when the payload holds none, or ``"no_cell"`` for a frame or
            record without a periodic cell (a molecule, a zero cell). Warnings the parser emits are
            added to the detail, never silenced globally.
    """
    from pymatgen.core import Structure

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if record.kind == "dict":
                structure = Structure.from_dict(record.payload)  # type: ignore[arg-type]
            elif record.kind == "sites":
                structure = _from_sites(record.payload)  # type: ignore[arg-type]
            elif record.kind == "extxyz":
                structure = _from_extxyz(str(record.payload))
            elif record.kind == "poscar":
                from pymatgen.io.vasp import Poscar

                structure = Poscar.from_str(str(record.payload)).structure
            else:
                from pymatgen.io.cif import CifParser

                parser = CifParser.from_str(str(record.payload))
                found = parser.parse_structures(primitive=False, on_error="raise")
                if not found:
                    raise RejectedStructure("no_structure", "the CIF holds no structure")
                structure = found[0]
        except RejectedStructure:
            raise
        except (ValueError, KeyError, IndexError, TypeError, ZeroDivisionError) as exc:
            notes = "; ".join(sorted({str(w.message).splitlines()[0] for w in caught}))
            detail = _describe(exc)
            # pymatgen's CIF parser refuses a cell of (near) zero volume with "thickness=[...]
            # Å below threshold": the filters' reason for such a cell, not a parse failure.
            flat = any("thickness" in m and "below threshold" in m for m in _messages(exc))
            reason = "zero_volume" if flat else "unparsable"
            raise RejectedStructure(
                reason, f"{detail}{' (' + notes + ')' if notes else ''}"
            ) from exc
    return structure


def _from_sites(payload: dict[str, Any]) -> Structure:
    """A structure from lattice rows (Å), species and Cartesian coordinates (Å)."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    species, coords = payload.get("species"), payload.get("coords")
    if payload.get("lattice") is None:
        raise RejectedStructure("no_cell", "the record has no lattice vectors")
    if any(v is None for row in payload["lattice"] for v in row):
        raise RejectedStructure("no_cell", "lattice vectors with null components")
    lattice = np.asarray(payload["lattice"], dtype=float)
    if lattice.shape != (3, 3):
        raise RejectedStructure("no_cell", f"lattice vectors of shape {lattice.shape}, not (3, 3)")
    if not np.any(lattice):
        raise RejectedStructure("no_cell", "the lattice vectors are all zero")
    if species is None or coords is None:
        raise RejectedStructure("no_structure", "the record has no sites")
    positions = np.asarray(coords, dtype=float).reshape(-1, 3)
    if len(species) != len(positions):
        raise RejectedStructure(
            "unparsable", f"{len(species)} species for {len(positions)} positions"
        )
    return Structure(Lattice(lattice), list(species), positions, coords_are_cartesian=True)


def _from_extxyz(text: str) -> Structure:
    """A structure from one extended-XYZ frame (read by ASE)."""
    import io

    import numpy as np

    from crystalgrid.sources.location import needs

    ase_io = needs("ase.io", "ase", "extended XYZ")
    try:
        atoms = ase_io.read(io.StringIO(text), format="extxyz")
    except OSError as exc:  # ASE's XYZError: a frame it cannot read
        raise RejectedStructure("unparsable", f"{type(exc).__name__}: {exc}") from None
    cell = np.asarray(atoms.cell[:], dtype=float)
    if not atoms.pbc.any() or not np.any(cell):
        raise RejectedStructure("no_cell", "the frame has no periodic cell (no Lattice)")
    return _from_sites(
        {"lattice": cell, "species": [int(z) for z in atoms.numbers], "coords": atoms.positions}
    )


def _messages(exc: BaseException) -> list[str]:
    """The first line of ``exc``'s message and of each exception it was raised from."""
    messages: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).splitlines()[0] if str(current) else ""
        messages.append(re.sub(r"np\.float64\(([^()]*)\)", r"\1", text))
        current = current.__cause__ or current.__context__
    return messages


def _describe(exc: BaseException) -> str:
    """``"ValueError: message (cause: message of the exception it came from)"``, one line."""
    first, *causes = _messages(exc)
    causes = [c for c in causes if c and c != first]
    return f"{type(exc).__name__}: {first}" + (f" (cause: {'; '.join(causes)})" if causes else "")
