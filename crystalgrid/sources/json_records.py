"""Structures in JSON: a ``.json`` / ``.json.gz`` list or dict of records (the Materials
Project's shape), or JSON Lines (``.jsonl[.gz]``), read one record at a time."""

from __future__ import annotations

import contextlib
import itertools
import json
from typing import IO, TYPE_CHECKING, Any

from crystalgrid.errors import BadInputError
from crystalgrid.jsonstream import iter_json
from crystalgrid.sources.base import RawRecord, Rejected
from crystalgrid.sources.location import (
    FileSource,
    Location,
    is_scalar,
    open_text,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["JsonSource"]


class JsonSource(FileSource):
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
    describes = "a .json, .json.gz, .jsonl or .jsonl.gz file of structure records"

    @classmethod
    def can_open(cls, path: Location) -> bool:
        return path.is_file() and path.name.lower().endswith(
            (".json", ".json.gz", ".jsonl", ".jsonl.gz")
        )

    expects = "file"

    @property
    def lines(self) -> bool:
        """Whether the file is JSON Lines (``.jsonl[.gz]``)."""
        return self.path.name.lower().removesuffix(".gz").endswith(".jsonl")

    @contextlib.contextmanager
    def _text(self) -> Iterator[IO[str]]:
        """The file as text (gunzipped for ``.gz``); read errors become one line."""
        try:
            with open_text(self.path) as fh:
                yield fh
        except json.JSONDecodeError as exc:
            raise BadInputError(
                f"{self.path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
            ) from None

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
            raise BadInputError(
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
            BadInputError: the file is not valid JSON (raised when the reading gets
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
        if key not in ("material_id", "structure") and is_scalar(value)
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
                key: value[index] for key, value in parallel.items() if is_scalar(value[index])
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
