"""Pages: one request per page, its documents as collection records."""

from __future__ import annotations

from typing import Any

from crystalgrid.mp._client import RETRY_STATUSES, describe, request_failure
from crystalgrid.mp._plan import FIELDS, QueryPlan

__all__ = ["PageError", "fetch_page", "to_record"]


class PageError(Exception):
    """A page that failed: ``reason`` in a few words; ``fatal``: no later page is tried."""

    def __init__(self, reason: str, *, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


def to_record(doc: dict[str, Any]) -> dict[str, Any]:
    """A summary document as a collection record (see docs/fetch.md for the units)."""
    symmetry = doc.get("symmetry") or {}
    crystal_system = symmetry.get("crystal_system")
    return {
        "material_id": str(doc["material_id"]),
        "formula": doc.get("formula_pretty"),
        "structure": doc.get("structure"),
        "properties": {
            "energy_above_hull": doc.get("energy_above_hull"),
            "formation_energy_per_atom": doc.get("formation_energy_per_atom"),
            "band_gap": doc.get("band_gap"),
            "is_stable": doc.get("is_stable"),
            "theoretical": doc.get("theoretical"),
            "nsites": doc.get("nsites"),
            "spacegroup_number": symmetry.get("number"),
            "spacegroup_symbol": symmetry.get("symbol"),
            "crystal_system": getattr(crystal_system, "value", crystal_system),
        },
    }


def fetch_page(
    rester: Any,
    plan: QueryPlan,
    index: int,
    *,
    target: int,
    total: int | None,
    key: str,
    retries: int,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Download page ``index`` (``target``: documents in the whole query, ``total``: the
    server's count when the query has filters): ``(records, ids asked for and not
    returned)``.

    Raises:
        PageError: the page failed (``fatal``: the fetch stops after it).
    """
    import requests
    from mp_api.client.core import MPRestError

    criteria = plan.page_criteria(index, target)
    try:
        result = _query_page(rester, criteria)
    except requests.RequestException as exc:  # a timeout or a dropped connection, retried
        raise PageError(f"{request_failure(exc)} after {retries} retries", fatal=True) from None
    except MPRestError as exc:
        status, reason = describe(exc, key)
        if status in RETRY_STATUSES or status is None:
            reason += f" after {retries} retries"
        raise PageError(reason, fatal=status is None or status in (401, 403)) from None
    docs = [d for d in result.get("data") or [] if isinstance(d, dict) and d.get("material_id")]
    if plan.ids is not None:
        wanted = plan.page_ids(index)
        by_id = {str(d["material_id"]): d for d in docs}
        records = [to_record(by_id[i]) for i in wanted if i in by_id]
        return records, [i for i in wanted if i not in by_id]
    server_total = (result.get("meta") or {}).get("total_doc")
    if total is not None and server_total is not None and server_total != total:
        raise PageError(
            f"the server's count for this query changed from {total} to {server_total}; "
            "the database changed: fetch into a new --out directory",
            fatal=True,
        )
    if len(docs) != criteria["_limit"]:
        raise PageError(f"expected {criteria['_limit']} documents, got {len(docs)}")
    return [to_record(d) for d in docs], []


def _query_page(rester: Any, criteria: dict[str, Any]) -> dict[str, Any]:
    """One page of the summary route: ``{"data": [documents], "meta": {"total_doc": ...}}``.

    This calls mp-api's private ``_query_resource``, the call ``search`` makes for its first
    page, because the public ``search`` fetches every page of a query and cannot ask for one
    (``_skip``, ``_limit``, ``num_chunks=1``), and checks ``fields`` against the document
    model on every call (~50 ms per field; :func:`~crystalgrid.mp.fetch` checks once and
    passes ``_fields``). A new mp-api that renames it fails here, and only here.
    """
    result: dict[str, Any] = rester._query_resource(
        criteria=dict(criteria, _fields=",".join(FIELDS)),
        num_chunks=1,
        chunk_size=criteria["_limit"],
    )
    return result
