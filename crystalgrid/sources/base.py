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

PayloadKind = Literal["cif", "dict"]


@dataclass(frozen=True)
class RawRecord:
    """One structure, not yet parsed.

    Attributes:
        material_id: the id the dataset will carry (e.g. ``"mp-149"``, a CIF file's stem).
        kind: ``"cif"`` (payload is CIF text) or ``"dict"`` (payload is ``Structure.as_dict()``).
        payload: the CIF text or the structure dict.
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
    """

    name: str

    def records(self) -> Iterator[RawRecord | Rejected]: ...

    def provenance(self) -> dict[str, Any]: ...

    def fingerprint(self) -> str: ...


def parse_record(record: RawRecord) -> Structure:
    """Parse a record's payload into a ``Structure``.

    Raises:
        RejectedStructure: ``"unparsable"`` with the parser's message as detail, or
            ``"no_structure"`` when the payload holds none. Warnings the parser emits are
            added to the detail, never silenced globally.
    """
    from pymatgen.core import Structure

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if record.kind == "dict":
                structure = Structure.from_dict(record.payload)  # type: ignore[arg-type]
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
