"""Fetch structures from an OPTIMADE provider into a collection: resolve the provider, page
through ``/v1/structures`` by its ``links.next``, write each page, resume where it stopped."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from tqdm.auto import tqdm

from crystalgrid._version import __version__
from crystalgrid.collection import FORMAT, CollectionWriter, check_target, load_manifest
from crystalgrid.errors import BadInputError, ConfigError
from crystalgrid.optimade._entries import to_record
from crystalgrid.optimade._http import (
    HttpSettings,
    OptimadeRequestError,
    ProviderError,
    get_json,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "OPTIMADE_CITATION",
    "PROVIDERS_URL",
    "SOURCE",
    "OptimadeReport",
    "fetch_optimade",
    "resolve_provider",
]

SOURCE = "optimade"
#: The OPTIMADE list of providers (an index meta-database).
PROVIDERS_URL = "https://providers.optimade.org/v1/links"
DEFAULT_PAGE_SIZE = 100
#: What to cite for the OPTIMADE API itself.
OPTIMADE_CITATION = (
    "Evans et al., Digital Discovery 3, 1509 (2024); Andersen et al., Sci. Data 8, 217 (2021)"
)


@dataclass(frozen=True)
class Provider:
    """Where to fetch from.

    Attributes:
        base_url: the database's OPTIMADE base URL (``.../v1/structures`` is under it).
        name: the provider's short name (``"alexandria"``), or ``None`` for a URL given as is.
        title: the provider's or database's name as it gives it.
    """

    base_url: str
    name: str | None = None
    title: str | None = None


@dataclass
class OptimadeReport:
    """What a fetch did.

    Attributes:
        path: the collection directory.
        count: entries in the collection (valid or rejected).
        rejected: entries kept with a reject reason (partial occupancy, no cell, ...).
        pages: pages on disk.
        pages_fetched: pages downloaded by this call.
        complete: every page is there (or ``limit`` was reached).
        stopped: why the fetch stopped early (a request that kept failing), else ``None``.
        seconds: wall time of the call.
    """

    path: Path
    count: int = 0
    rejected: int = 0
    pages: int = 0
    pages_fetched: int = 0
    complete: bool = False
    stopped: str | None = None
    seconds: float = 0.0
    provider: dict[str, Any] = field(default_factory=dict)


def resolve_provider(
    name_or_url: str, *, providers_url: str | None = None, settings: HttpSettings | None = None
) -> Provider:
    """The database to fetch from: a URL as is, or a provider's short name looked up in the
    OPTIMADE providers list (its index database's ``links``, whose one ``child`` is taken).

    Args:
        name_or_url: ``"https://.../optimade"`` or a provider id of the list (``"alexandria"``).
        providers_url: the list (default ``CRYSTALGRID_OPTIMADE_PROVIDERS``, then
            :data:`PROVIDERS_URL`).

    Raises:
        BadInputError: an unknown provider (the message names the known ones), or one with
            several databases (named: pass one's URL).
    """
    settings = settings or HttpSettings()
    if "://" in name_or_url:
        return Provider(base_url=name_or_url.rstrip("/"))
    listing_url = providers_url or os.environ.get("CRYSTALGRID_OPTIMADE_PROVIDERS") or PROVIDERS_URL
    providers = get_json(listing_url, settings).get("data") or []
    known = {str(p.get("id")): p for p in providers if isinstance(p, dict)}
    if name_or_url not in known:
        names = ", ".join(sorted(known)) or "none"
        raise BadInputError(f"unknown OPTIMADE provider {name_or_url!r} (the list names: {names})")
    entry = known[name_or_url]
    index = (entry.get("attributes") or {}).get("base_url")
    if isinstance(index, dict):
        index = index.get("href")
    if not index:
        raise BadInputError(f"the OPTIMADE provider {name_or_url!r} lists no database")
    links = get_json(f"{str(index).rstrip('/')}/v1/links", settings).get("data") or []
    children = [
        link
        for link in links
        if (link.get("attributes") or {}).get("link_type") == "child"
        and (link.get("attributes") or {}).get("base_url")
    ]
    if len(children) != 1:
        urls = ", ".join(_href(c["attributes"]["base_url"]) for c in children) or "none"
        raise BadInputError(
            f"the OPTIMADE provider {name_or_url!r} has {len(children)} databases ({urls}); "
            "pass the URL of one to --optimade"
        )
    attributes = children[0]["attributes"]
    title = (entry.get("attributes") or {}).get("name") or attributes.get("name")
    return Provider(_href(attributes["base_url"]).rstrip("/"), name_or_url, title)


def _href(value: Any) -> str:
    return str(value.get("href") if isinstance(value, dict) else value)


def fetch_optimade(
    out_dir: str | os.PathLike[str],
    provider: str,
    *,
    filter: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    limit: int | None = None,
    timeout_s: float = 30.0,
    retries: int = 5,
    backoff_s: float = 1.0,
    providers_url: str | None = None,
    quiet: bool = False,
) -> OptimadeReport:
    """Download an OPTIMADE provider's structures into a collection, resuming what is there.

    Args:
        out_dir: the collection directory (new, empty, or one made by the same query).
        provider: a base URL or a provider's short name (see :func:`resolve_provider`).
        filter: an OPTIMADE filter (``'nelements=2 AND nsites<=20'``); ``None``: everything.
        page_size: entries asked for per request (``page_limit``; a provider may give fewer).
        limit: stop after this many entries.
        timeout_s, retries, backoff_s: see :class:`~crystalgrid.optimade._http.HttpSettings`.
        providers_url: the providers list to look a short name up in.
        quiet: no progress bar.

    Returns:
        An :class:`OptimadeReport`; ``complete`` is false when a page kept failing (the pages
        before it are saved, and the same call goes on from there).

    Raises:
        ConfigError: a page size or limit below 1.
        BadInputError: an unknown provider, or a directory that holds another query's
            collection or something else.
        ProviderError: the provider refused the query (a bad filter: its error document).
    """
    if page_size < 1 or (limit is not None and limit < 1):
        raise ConfigError("page_size and limit must be at least 1")
    started = time.monotonic()
    out = Path(out_dir)
    check_target(out)
    settings = HttpSettings(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
    query = {"provider": provider, "filter": filter, "page_size": page_size, "limit": limit}
    existing = load_manifest(out)
    first: dict[str, Any] | None = None
    if existing is not None:
        _check_resume(existing, query, out)
        if existing.get("complete"):
            return _report(out, existing, started, fetched=0)
        where = Provider(existing["base_url"], existing.get("provider"), existing.get("title"))
        manifest = existing
    else:
        where = resolve_provider(provider, providers_url=providers_url, settings=settings)
        manifest = _new_manifest(where, query, settings)
        # The first page before anything is written: a refused query leaves no folder behind.
        first = get_json(_first_url(where.base_url, query), settings)
    with CollectionWriter(out, manifest) as writer:
        fetched, stopped = _download(writer, where, query, settings, quiet=quiet, first=first)
        if stopped is None:
            writer.update(complete=True)
        report = _report(out, writer.manifest, started, fetched=fetched)
    report.stopped = stopped
    return report


def _first_url(base_url: str, query: dict[str, Any]) -> str:
    params = {"page_limit": query["page_size"]}
    if query["filter"]:
        params["filter"] = query["filter"]
    return f"{base_url}/v1/structures?{urlencode(params)}"


def _new_manifest(where: Provider, query: dict[str, Any], settings: HttpSettings) -> dict[str, Any]:
    """A new manifest: the provider's provenance and licence from its ``/v1/info``."""
    try:
        info = get_json(f"{where.base_url}/v1/info", settings).get("data") or {}
    except (OptimadeRequestError, ProviderError):
        info = {}  # /info is optional to us: without it, no licence is recorded
    attributes = info.get("attributes") or {}
    licences = attributes.get("available_licenses") or []
    licence = licences[0] if licences else None
    if licence is None and attributes.get("license"):
        licence = _href(attributes["license"])
    title = where.title or where.name or urlsplit(where.base_url).hostname
    return {
        "format": FORMAT,
        "source": SOURCE,
        "provider": where.name,
        "title": title,
        "base_url": where.base_url,
        "api_version": attributes.get("api_version"),
        "query": query,
        "filter": query["filter"],
        "licence": licence,
        "citation": f"{title} ({where.base_url}), via OPTIMADE: {OPTIMADE_CITATION}",
        "client": f"crystalgrid {__version__}",
        "page_urls": {},
        "pages": {},
        "complete": False,
    }


def _check_resume(existing: dict[str, Any], query: dict[str, Any], out: Path) -> None:
    """Refuse to resume into a collection made by another source or query."""
    if existing.get("source") != SOURCE:
        raise BadInputError(
            f"{out} holds a collection from {existing.get('source')!r}, not OPTIMADE; "
            "choose another --out directory"
        )
    old = existing.get("query") or {}
    if old != query:
        diff = sorted(k for k in set(old) | set(query) if old.get(k) != query.get(k))
        raise BadInputError(
            f"{out} was fetched with a different query (differs in: {', '.join(diff)}); "
            "repeat the original command to resume it, or choose another --out directory"
        )


def _download(
    writer: CollectionWriter,
    where: Provider,
    query: dict[str, Any],
    settings: HttpSettings,
    *,
    quiet: bool,
    first: dict[str, Any] | None = None,
) -> tuple[int, str | None]:
    """Fetch the pages not on disk, in order; ``(pages fetched, why it stopped or None)``.
    ``first``: page 0's answer when it was fetched already."""
    manifest = writer.manifest
    urls: dict[str, str | None] = manifest.setdefault("page_urls", {})
    urls.setdefault("0", _first_url(where.base_url, query))
    limit = query["limit"]
    count = int(manifest.get("count") or 0)
    fetched = 0
    index = 0
    bar = tqdm(
        total=manifest.get("expected_count"),
        initial=count,
        unit=" entries",
        desc=f"fetch {where.name or where.base_url}",
        disable=quiet,
    )
    try:
        while True:
            url = urls.get(str(index))
            if url is None or (limit is not None and count >= limit):
                return fetched, None
            if writer.has_page(index) and str(index + 1) in urls:
                index += 1
                continue
            try:
                document = first if index == 0 and first is not None else get_json(url, settings)
            except OptimadeRequestError as exc:
                return fetched, f"page {index} failed: {exc}"
            entries = [e for e in document.get("data") or [] if isinstance(e, dict)]
            if limit is not None:
                entries = entries[: max(0, limit - count)]
            records = [to_record(entry) for entry in entries]
            next_url = _next_link(document) if entries else None
            if next_url == url:
                next_url = None  # a provider that links a page to itself: the end
            urls[str(index + 1)] = next_url
            meta = document.get("meta") or {}
            if meta.get("data_returned") is not None and manifest.get("expected_count") is None:
                manifest["expected_count"] = int(meta["data_returned"])
                bar.total = min(int(meta["data_returned"]), limit or math.inf)
                bar.refresh()
            if not writer.has_page(index):
                writer.write_page(
                    index, records, rejected=sum("reject" in r for r in records), url=url
                )
                count += len(records)
                fetched += 1
                bar.update(len(records))
            else:
                writer.update(page_urls=urls)
            index += 1
    finally:
        bar.close()


def _next_link(document: dict[str, Any]) -> str | None:
    """``links.next`` (a string or ``{"href": ...}``), or ``None`` on the last page."""
    nxt = (document.get("links") or {}).get("next")
    if isinstance(nxt, dict):
        nxt = nxt.get("href")
    return str(nxt) if nxt else None


def _report(out: Path, manifest: dict[str, Any], started: float, *, fetched: int) -> OptimadeReport:
    pages = manifest.get("pages") or {}
    return OptimadeReport(
        path=out,
        count=int(manifest.get("count") or 0),
        rejected=sum(int(p.get("rejected") or 0) for p in pages.values()),
        pages=len(pages),
        pages_fetched=fetched,
        complete=bool(manifest.get("complete")),
        seconds=time.monotonic() - started,
        provider={k: manifest.get(k) for k in ("provider", "title", "base_url", "licence")},
    )
