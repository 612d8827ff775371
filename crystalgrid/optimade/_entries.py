"""OPTIMADE structure entries as collection records (``{"material_id", "formula",
"structure", "properties"}``), or as records that carry their reject reason."""

from __future__ import annotations

from typing import Any

from crystalgrid.errors import RejectedStructure
from crystalgrid.sources.location import is_scalar
from crystalgrid.sources.optimade_parquet import STRUCTURE_FIELDS, optimade_symbols

__all__ = ["to_record"]
#: Attributes that are arrays of the structure, not properties.
_NOT_PROPERTIES = {*STRUCTURE_FIELDS, "species", "immutable_id"}


def to_record(entry: dict[str, Any]) -> dict[str, Any]:
    """The collection record of one entry of a ``/structures`` answer.

    A structure the collection cannot hold (partial occupancy, no periodic cell, arrays of
    mismatched lengths, missing fields) keeps ``"structure": None`` and a ``"reject"`` of
    ``{"reason", "detail"}``, read back as a reject by the build.
    """
    from pymatgen.core import Lattice, Structure

    attributes = entry.get("attributes") or {}
    material_id = str(entry.get("id") or attributes.get("immutable_id") or "")
    record: dict[str, Any] = {
        "material_id": material_id,
        "formula": attributes.get("chemical_formula_reduced"),
        "structure": None,
        "properties": {
            k: v for k, v in attributes.items() if k not in _NOT_PROPERTIES and is_scalar(v)
        },
    }
    try:
        missing = [f for f in STRUCTURE_FIELDS if not attributes.get(f)]
        if missing:
            raise RejectedStructure("no_structure", f"the entry has no {', '.join(missing)}")
        lattice = attributes["lattice_vectors"]
        if any(v is None for row in lattice for v in row):
            raise RejectedStructure("no_cell", "lattice vectors with null components")
        species = optimade_symbols(attributes)
        names = attributes["species_at_sites"]
        positions = attributes["cartesian_site_positions"]
        if len(names) != len(positions):
            raise RejectedStructure(
                "unparsable", f"{len(names)} species_at_sites for {len(positions)} positions"
            )
        structure = Structure(
            Lattice(lattice),
            [species.get(n, n) for n in names],
            positions,
            coords_are_cartesian=True,
        )
    except RejectedStructure as exc:
        record["reject"] = {"reason": exc.reason, "detail": exc.detail}
        return record
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        record["reject"] = {"reason": "unparsable", "detail": f"{type(exc).__name__}: {exc}"}
        return record
    record["structure"] = structure.as_dict()
    return record
