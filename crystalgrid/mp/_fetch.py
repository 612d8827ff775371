"""The fetch, step by step: check the target, start the client, count, plan the manifest,
download the missing pages, check the whole, report."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystalgrid._version import __version__
from crystalgrid.collection import (
    CITATION,
    FORMAT,
    LICENCE,
    CollectionWriter,
    check_target,
    load_manifest,
)
from crystalgrid.errors import BadInputError, ConfigError, CrystalgridError, IntegrityError
from crystalgrid.jsonio import utc_now
from crystalgrid.mp._client import (
    RETRY_STATUSES,
    ClientSettings,
    client_settings,
    describe,
    display_url,
    open_client,
    package_version,
    request_failure,
    server_version,
)
from crystalgrid.mp._keys import KEY_URL, resolve_api_key, scrub
from crystalgrid.mp._pages import PageError, fetch_page
from crystalgrid.mp._plan import DEFAULT_PAGE_SIZE, FIELDS, QueryPlan, plan_query
from crystalgrid.sources.collection import open_collection

__all__ = ["DEFAULT_OUT", "SOURCE", "FetchReport", "PageFailure", "fetch"]

SOURCE = "materials-project"
DEFAULT_OUT = Path("crystalgrid-data") / "materials-project"
#: Pages in a row that may fail before the fetch stops.
MAX_CONSECUTIVE_FAILURES = 3


@dataclass(frozen=True)
class PageFailure:
    """A page that could not be fetched.

    Attributes:
        index: the page number (0-based; the file would be ``page-<index>.json.gz``).
        reason: why, in a few words (``"HTTP 500 after 5 retries"``).
    """

    index: int
    reason: str


@dataclass
class FetchReport:
    """What a :func:`fetch` did.

    Attributes:
        path: the collection directory.
        count: records now in the collection.
        pages: pages the query maps to.
        pages_fetched: pages downloaded by this call.
        pages_reused: pages that were already on disk (a resume).
        docs_fetched: records downloaded by this call.
        failed: pages that failed in this call (retried and still failing).
        missing_ids: requested ids the server did not return (``ids`` queries only).
        database_version: the Materials Project database version (from the heartbeat).
        seconds: wall time of the call (s), client start-up included.
        download_seconds: time spent downloading and writing pages (s).
        complete: whether every page is now on disk.
        stopped: why the call stopped before trying every page, or ``""``.
    """

    path: Path
    count: int
    pages: int
    pages_fetched: int
    pages_reused: int
    docs_fetched: int
    failed: list[PageFailure] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)
    database_version: str | None = None
    seconds: float = 0.0
    download_seconds: float = 0.0
    complete: bool = False
    stopped: str = ""

    @property
    def pages_missing(self) -> int:
        """Pages still not on disk."""
        return self.pages - self.pages_fetched - self.pages_reused

    @property
    def docs_per_second(self) -> float:
        """Records downloaded per second spent downloading pages (docs/s)."""
        elapsed = self.download_seconds
        return self.docs_fetched / elapsed if elapsed > 0 else 0.0


def fetch(
    out_dir: str | os.PathLike[str] = DEFAULT_OUT,
    *,
    api_key: str | None = None,
    endpoint: str | None = None,
    max_sites: int | None = None,
    elements: Iterable[str] | str | None = None,
    max_ehull: float | None = None,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    include_gnome: bool = False,
    page_size: int = DEFAULT_PAGE_SIZE,
    retries: int | None = None,
    backoff_s: float | None = None,
    timeout_s: float | None = None,
    quiet: bool = False,
) -> FetchReport:
    """Download Materials Project structures into a collection, resuming what is there.

    Args:
        out_dir: the collection directory (new, empty, or a collection made by the same query).
        api_key: the key; default ``MP_API_KEY``, then ``PMG_MAPI_KEY``. Never written anywhere.
        endpoint: the API's base URL; default ``MP_API_ENDPOINT``, then mp-api's own default.
        max_sites: keep materials with at most this many sites in the cell.
        elements: keep materials containing all of these elements (symbols, or "Fe,O").
        max_ehull: keep materials at most this far above the convex hull (eV/atom).
        ids: fetch these material ids (e.g. the CGCNN list; see :func:`~crystalgrid.mp.read_ids`).
        limit: fetch at most this many materials (the first ones in the query's order).
        include_gnome: include GNoME entries (excluded by default).
        page_size: documents per request and per page file (1 to 1000).
        retries: retries per request for 429, 5xx and connection errors (default 5).
        backoff_s: backoff factor (s): waits grow as backoff_s * 2**n, at most 60 s.
        timeout_s: seconds to wait for a connection and for each answer (default 20).
        quiet: no progress bar.

    Returns:
        A :class:`FetchReport`; check ``report.complete``. Pages that failed are listed in
        ``report.failed``; everything else is saved, and the same call fetches what is missing.

    Raises:
        ConfigError: bad arguments, or a key that is missing, malformed or refused.
        BadInputError: a directory holding another query's collection or something else.
        IntegrityError: a database that changed since the collection was started.
        CrystalgridError: an unreachable endpoint, or an mp-api too old. The message is one
            line and never contains the key.
    """
    started = time.monotonic()
    key = resolve_api_key(api_key)
    try:
        return _fetch(
            Path(out_dir),
            key=key,
            endpoint=endpoint or os.environ.get("MP_API_ENDPOINT") or None,
            plan=plan_query(
                max_sites=max_sites,
                elements=elements,
                max_ehull=max_ehull,
                ids=ids,
                limit=limit,
                include_gnome=include_gnome,
                page_size=page_size,
            ),
            settings=client_settings(retries, backoff_s, timeout_s),
            quiet=quiet,
            started=started,
        )
    except CrystalgridError as exc:
        message = str(exc)
        if key in message:
            raise type(exc)(scrub(message, key)) from None
        raise


def _fetch(
    out: Path,
    *,
    key: str,
    endpoint: str | None,
    plan: QueryPlan,
    settings: ClientSettings,
    quiet: bool,
    started: float,
) -> FetchReport:
    query = plan.query
    check_target(out)
    existing = load_manifest(out)
    if existing is not None:
        _check_resume(existing, query, out)
        report = _already_complete(out, existing, started)
        if report is not None:
            return report

    client = open_client(key, endpoint, settings)
    shown = display_url(client.endpoint)
    db_version = client.db_version or None
    rester = client.materials.summary
    _check_fields(rester)
    count = _count(rester, plan, shown=shown, key=key, retries=settings.retries)
    if plan.ids is not None:
        total = None
        target = len(plan.ids) if plan.limit is None else min(plan.limit, len(plan.ids))
    else:
        total = count
        target = total if plan.limit is None else min(plan.limit, total)
    n_pages = math.ceil(target / plan.page_size)
    if existing is not None:
        _check_unchanged(existing, out, db_version=db_version, total=total)
        manifest = dict(existing, complete=False, expected_pages=n_pages)
    else:
        manifest = _new_manifest(
            query, client, shown=shown, db_version=db_version, total=total, n_pages=n_pages
        )

    with CollectionWriter(out, manifest) as writer:
        done = _download(
            writer,
            rester,
            plan,
            target=target,
            total=total,
            n_pages=n_pages,
            key=key,
            retries=settings.retries,
            quiet=quiet,
        )
        missing = _missing_ids(writer.manifest)
        complete = len(writer.manifest["pages"]) == n_pages
        if complete:
            _check_no_repeats(writer, out)
        writer.update(complete=complete)
        count_now = int(writer.manifest["count"])

    return FetchReport(
        path=out,
        count=count_now,
        pages=n_pages,
        pages_fetched=done.fetched,
        pages_reused=done.reused,
        docs_fetched=done.docs,
        failed=done.failed,
        missing_ids=missing,
        database_version=db_version,
        seconds=time.monotonic() - started,
        download_seconds=done.seconds,
        complete=complete,
        stopped=done.stopped,
    )


def _check_resume(existing: dict[str, Any], query: dict[str, Any], out: Path) -> None:
    """Refuse to resume into a collection made by another query (before any request)."""
    if existing.get("source") != SOURCE:
        raise BadInputError(
            f"{out} holds a collection from {existing.get('source')!r}, not the Materials "
            "Project; choose another --out directory"
        )
    if existing.get("query") != query:
        old, new = existing.get("query") or {}, query
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise BadInputError(
            f"{out} was fetched with a different query (differs in: {', '.join(diff)}); "
            "repeat the original command to resume it, or choose another --out directory"
        )


def _already_complete(out: Path, existing: dict[str, Any], started: float) -> FetchReport | None:
    """The report of a collection that is complete and whose every page checks out: no
    request at all (works offline). None when something is missing."""
    if not existing.get("complete"):
        return None
    try:
        source = open_collection(out)
    except CrystalgridError:
        return None  # a page went missing or bad: the writer drops it and it is fetched again
    return FetchReport(
        path=out,
        count=len(source),
        pages=len(existing["pages"]),
        pages_fetched=0,
        pages_reused=len(existing["pages"]),
        docs_fetched=0,
        missing_ids=_missing_ids(existing),
        database_version=existing.get("database_version"),
        seconds=time.monotonic() - started,
        complete=True,
    )


def _check_fields(rester: Any) -> None:
    """mp-api checks ``fields`` against the document model on every call (~50 ms per field):
    check once here, and pass ``_fields`` directly with each page.

    Raises:
        CrystalgridError: the installed mp-api does not know a field of :data:`FIELDS`.
    """
    unknown = sorted(set(FIELDS) - set(rester.available_fields))
    if unknown:
        raise CrystalgridError(
            f"mp-api {package_version('mp-api')} does not know the summary fields "
            f"{', '.join(unknown)}: upgrade it (pip install -U mp-api)"
        )


def _count(rester: Any, plan: QueryPlan, *, shown: str, key: str, retries: int) -> int:
    """One cheap request first: it checks the key and gives the total (filters) or the count
    of the first slice (ids).

    Raises:
        ConfigError: the key is refused.
        CrystalgridError: the endpoint fails or stops answering.
    """
    import requests
    from mp_api.client.core import MPRestError

    probe = dict(plan.criteria, _limit=1, _fields="material_id")
    if plan.ids is not None:
        probe["material_ids"] = ",".join(plan.page_ids(0))
    try:
        return int(rester.count(probe))
    except requests.RequestException as exc:
        raise CrystalgridError(
            f"the Materials Project API at {shown} stopped answering: {request_failure(exc)}; "
            "run the same command again"
        ) from None
    except MPRestError as exc:
        status, reason = describe(exc, key)
        if status in (401, 403):
            raise ConfigError(
                f"the Materials Project refused the API key ({reason}); check MP_API_KEY "
                f"or --api-key (keys: {KEY_URL})"
            ) from None
        if status is None:
            raise CrystalgridError(
                f"cannot reach the Materials Project API at {shown}: {reason}"
            ) from None
        if status in RETRY_STATUSES:
            reason += f" after {retries} retries"
        raise CrystalgridError(f"the Materials Project API at {shown} answered {reason}") from None


def _check_unchanged(
    existing: dict[str, Any], out: Path, *, db_version: str | None, total: int | None
) -> None:
    """Refuse to resume when the database or the query's total changed: the pages would not
    line up."""
    if existing.get("database_version") != db_version:
        raise IntegrityError(
            f"{out} was fetched from Materials Project database "
            f"{existing.get('database_version')}, the server now serves {db_version}: "
            "the pages would not line up; fetch into a new --out directory"
        )
    if total is not None and existing.get("server_total") != total:
        raise IntegrityError(
            f"{out} was started when the query matched {existing.get('server_total')} "
            f"materials, it now matches {total}: fetch into a new --out directory"
        )


def _new_manifest(
    query: dict[str, Any],
    client: Any,
    *,
    shown: str,
    db_version: str | None,
    total: int | None,
    n_pages: int,
) -> dict[str, Any]:
    """The manifest of a new collection (docs/fetch.md lists its keys)."""
    return {
        "format": FORMAT,
        "source": SOURCE,
        "query": query,
        "database_version": db_version,
        "server_version": server_version(client),
        "endpoint": shown,
        "mp_api_version": package_version("mp-api"),
        "crystalgrid_version": __version__,
        "created": utc_now(),
        "updated": None,
        "count": 0,
        "server_total": total,
        "expected_pages": n_pages,
        "licence": LICENCE,
        "citation": CITATION,
        "pages": {},
        "complete": False,
    }


@dataclass
class _Downloaded:
    """What :func:`_download` did: pages fetched and reused, records, failures, time (s)."""

    fetched: int = 0
    reused: int = 0
    docs: int = 0
    failed: list[PageFailure] = field(default_factory=list)
    stopped: str = ""
    seconds: float = 0.0


def _download(
    writer: CollectionWriter,
    rester: Any,
    plan: QueryPlan,
    *,
    target: int,
    total: int | None,
    n_pages: int,
    key: str,
    retries: int,
    quiet: bool,
) -> _Downloaded:
    """Fetch and write every page not on disk, in order; stop after a fatal failure or
    :data:`MAX_CONSECUTIVE_FAILURES` in a row."""
    from tqdm.auto import tqdm

    todo = [k for k in range(n_pages) if not writer.has_page(k)]
    done = _Downloaded(reused=n_pages - len(todo))
    pending = set(todo)
    done_units = sum(plan.page_units(k, target) for k in range(n_pages) if k not in pending)
    consecutive = 0
    loop_started = time.monotonic()
    with tqdm(
        total=target,
        initial=done_units,
        unit="doc",
        desc="fetch",
        disable=quiet,
        dynamic_ncols=True,
        smoothing=0.1,
    ) as bar:
        for position, index in enumerate(todo):
            try:
                records, absent = fetch_page(
                    rester, plan, index, target=target, total=total, key=key, retries=retries
                )
            except PageError as exc:
                done.failed.append(PageFailure(index, exc.reason))
                consecutive += 1
                if exc.fatal or consecutive >= MAX_CONSECUTIVE_FAILURES:
                    left = len(todo) - position - 1
                    if left:
                        done.stopped = f"stopped after page {index} failed ({exc.reason}); "
                        done.stopped += f"{left} more pages not tried"
                    break
                continue
            consecutive = 0
            extra = {"missing_ids": absent} if absent else {}
            writer.write_page(index, records, **extra)
            done.fetched += 1
            done.docs += len(records)
            bar.update(plan.page_units(index, target))
    done.seconds = time.monotonic() - loop_started
    return done


def _check_no_repeats(writer: CollectionWriter, out: Path) -> None:
    """Refuse a collection whose pages repeat an id (the server's order changed between
    runs); it is left marked incomplete."""
    seen: set[str] = set()
    dupes: list[str] = []
    for material_id in writer.material_ids():
        if material_id in seen:
            dupes.append(material_id)
        seen.add(material_id)
    if dupes:
        writer.update(complete=False)
        raise IntegrityError(
            f"{out}: {len(dupes)} material ids appear twice across pages (e.g. "
            f"{dupes[0]}): the server's order changed between runs; "
            "fetch into a new --out directory"
        )


def _missing_ids(manifest: dict[str, Any]) -> list[str]:
    """Ids asked for and not returned, over all pages in page order (``ids`` queries)."""
    return [i for _, info in sorted(manifest["pages"].items()) for i in info.get("missing_ids", [])]
