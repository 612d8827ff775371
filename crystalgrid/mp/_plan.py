"""The query plan: a query (filters, or a list of material ids) as a fixed sequence of pages.

With filters, page *k* is ``_skip = k * page_size``, ``_limit = page_size`` of the query
sorted by ``material_id``; with ``ids``, page *k* is the *k*-th slice of ``page_size`` ids.
Every query carries at least one server-side filter (``nsites >= 1``): one with none would
make mp-api skip the REST API for a bulk download from S3.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from crystalgrid.errors import ConfigError
from crystalgrid.mp._keys import ID_PATTERN

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "FIELDS",
    "GNOME_BATCH_ID",
    "MAX_PAGE_SIZE",
    "SORT_FIELD",
    "QueryPlan",
    "plan_query",
]

DEFAULT_PAGE_SIZE = 250
MAX_PAGE_SIZE = 1000
GNOME_BATCH_ID = "gnome_r2scan_statics"
SORT_FIELD = "material_id"
#: The summary fields requested: identity, structure, and the properties users condition on.
FIELDS = (
    "material_id",
    "formula_pretty",
    "structure",
    "nsites",
    "energy_above_hull",
    "formation_energy_per_atom",
    "band_gap",
    "is_stable",
    "theoretical",
    "symmetry",
)


@dataclass(frozen=True)
class QueryPlan:
    """The query and how it maps to pages."""

    criteria: dict[str, Any]
    page_size: int
    limit: int | None
    ids: list[str] | None
    include_gnome: bool

    @property
    def query(self) -> dict[str, Any]:
        """The query's identity, recorded in the manifest and compared on resume."""
        query: dict[str, Any] = {
            "route": "materials/summary",
            "criteria": dict(self.criteria),
            "fields": list(FIELDS),
            "include_gnome": self.include_gnome,
            "page_size": self.page_size,
            "limit": self.limit,
        }
        if self.ids is None:
            query["sort"] = SORT_FIELD
        else:
            digest = hashlib.sha256("\n".join(self.ids).encode()).hexdigest()
            query["ids"] = {"count": len(self.ids), "sha256": digest}
        return query

    def page_ids(self, index: int) -> list[str]:
        """The ids page ``index`` asks for (``ids`` queries)."""
        assert self.ids is not None
        wanted = self.ids if self.limit is None else self.ids[: self.limit]
        return wanted[index * self.page_size : (index + 1) * self.page_size]

    def page_units(self, index: int, target: int) -> int:
        """Progress units of page ``index``: documents (filters) or ids asked for (id lists);
        ``target``: documents in the whole query."""
        if self.ids is not None:
            return len(self.page_ids(index))
        return min(self.page_size, target - index * self.page_size)

    def page_criteria(self, index: int, target: int) -> dict[str, Any]:
        """The REST parameters of page ``index`` (``target``: documents in the whole query)."""
        criteria = dict(self.criteria)
        if self.ids is not None:
            chunk = self.page_ids(index)
            criteria["material_ids"] = ",".join(chunk)
            criteria["_limit"] = len(chunk)
        else:
            skip = index * self.page_size
            criteria["_sort_fields"] = SORT_FIELD
            criteria["_skip"] = skip
            criteria["_limit"] = min(self.page_size, target - skip)
        return criteria


def plan_query(
    *,
    max_sites: int | None,
    elements: Iterable[str] | str | None,
    max_ehull: float | None,
    ids: Sequence[str] | None,
    limit: int | None,
    include_gnome: bool,
    page_size: int,
) -> QueryPlan:
    """Check the arguments and build the query.

    Raises:
        ConfigError: a page size, limit, site count, hull distance, element or id that is not
            valid.
    """
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ConfigError(f"page size must be 1 to {MAX_PAGE_SIZE}, got {page_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    criteria: dict[str, Any] = {"nsites_min": 1}  # always one server-side filter (docs/fetch.md)
    if max_sites is not None:
        if max_sites < 1:
            raise ConfigError(f"max_sites must be at least 1, got {max_sites}")
        criteria["nsites_max"] = int(max_sites)
    if max_ehull is not None:
        if not max_ehull >= 0:
            raise ConfigError(f"max_ehull must be >= 0 eV/atom, got {max_ehull}")
        criteria["energy_above_hull_max"] = float(max_ehull)
    if elements is not None:
        from pymatgen.core import Element

        symbols = elements.split(",") if isinstance(elements, str) else list(elements)
        clean = sorted({s.strip().capitalize() for s in symbols if s.strip()})
        bad = [s for s in clean if not Element.is_valid_symbol(s)]
        if bad:
            raise ConfigError(f"elements: not element symbols: {', '.join(bad)}")
        if not clean:
            raise ConfigError("elements is empty")
        criteria["elements"] = ",".join(clean)
    if not include_gnome:
        criteria["batch_id_not_eq"] = GNOME_BATCH_ID
    id_list = None
    if ids is not None:
        id_list = list(dict.fromkeys(str(i).strip() for i in ids if str(i).strip()))
        bad = [i for i in id_list if not ID_PATTERN.fullmatch(i)]
        if bad:
            raise ConfigError(f"not material ids: {', '.join(bad[:5])}")
        if not id_list:
            raise ConfigError("the id list is empty")
    return QueryPlan(criteria, int(page_size), limit, id_list, bool(include_gnome))
