"""Materials Project structures through the official ``mp-api`` client, page by page.

:func:`fetch` turns a query (filters, or a list of material ids) into a fixed sequence of
pages and downloads the pages that are not yet on disk into a collection
(:mod:`crystalgrid.collection`), so running the same call again after an interruption
downloads only what is missing.

How pages map to the query:

- With filters, page *k* is ``_skip = k * page_size``, ``_limit = page_size`` of the query
  sorted by ``material_id`` (a stable order), the last page cut at ``limit``. The total comes
  from one count request first; a resume checks that the database version and the total are
  unchanged, since otherwise the pages would not line up.
- With ``ids``, page *k* is the *k*-th slice of ``page_size`` ids (in the order given, without
  repeats), requested with ``material_ids=...``; ids the server does not return are recorded
  as missing.

Every request carries at least one server-side filter (``nsites >= 1`` at least): a query
with none would make mp-api skip the REST API for a bulk download from S3.

Requests go through ``MPRester.materials.summary`` with ``use_document_model=False`` (plain
JSON, no pydantic round trip): :meth:`count` for the total and ``_query_resource`` with
``num_chunks=1`` for one page, the same call ``search`` makes for its first page. The
client's HTTP session gets a wider retry policy than mp-api's own (which retries 429, 502 and
504 three times): 429, 500, 502, 503 and 504 and connection errors are retried ``retries``
times with exponential backoff and jitter, honouring ``Retry-After``.

Nothing waits forever. Every request has a connect and read timeout (``timeout_s``). Before
the client starts, crystalgrid calls the endpoint's heartbeat itself, with that timeout,
retrying for at most :data:`HEARTBEAT_DEADLINE_S` (mp-api's own heartbeat call has no
timeout, so a server that accepts the connection and never answers would hang it). A request
that still times out after its retries during the download stops the fetch after that page
(exit status 1, the page listed as failed); the pages already written stay, and the same
command resumes.

The API key is never written: not to the collection, the report, or any message.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from crystalgrid import __version__
from crystalgrid.collection import (
    CITATION,
    FORMAT,
    LICENCE,
    CollectionWriter,
    check_target,
    load_manifest,
)
from crystalgrid.errors import CrystalgridError
from crystalgrid.jsonio import utc_now
from crystalgrid.sources.collection import open_collection

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_PAGE_SIZE",
    "FIELDS",
    "FetchReport",
    "PageFailure",
    "fetch",
    "read_ids",
    "resolve_api_key",
]

SOURCE = "materials-project"
DEFAULT_OUT = Path("crystalgrid-data") / "materials-project"
DEFAULT_PAGE_SIZE = 250
MAX_PAGE_SIZE = 1000
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF_S = 1.0
#: Seconds to wait for a connection and for each answer (``--timeout``).
DEFAULT_TIMEOUT_S = 20.0
#: How long the first contact (the heartbeat) may take in all, retries included, before a
#: stalled or unreachable endpoint is reported.
HEARTBEAT_DEADLINE_S = 120.0
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_CONSECUTIVE_FAILURES = 3
GNOME_BATCH_ID = "gnome_r2scan_statics"
SORT_FIELD = "material_id"
KEY_URL = "https://next-gen.materialsproject.org/api"
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
_ID_PATTERN = re.compile(r"[A-Za-z]+-[0-9A-Za-z]+")
_KEY_PATTERN = re.compile(r"[!-~]{32}")  # 32 printable ASCII characters, no spaces


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


def _pmgrc_key() -> str | None:
    """``PMG_MAPI_KEY`` from pymatgen's settings file (``~/.config/.pmgrc.yaml``), if any."""
    try:
        from pymatgen.core import SETTINGS
    except ImportError:  # pragma: no cover - pymatgen is a dependency
        return None
    value = SETTINGS.get("PMG_MAPI_KEY")
    return str(value) if value else None


def resolve_api_key(api_key: str | None = None) -> str:
    """The Materials Project API key to use, checked for shape (never for validity).

    Args:
        api_key: an explicit key; otherwise ``MP_API_KEY``, then ``PMG_MAPI_KEY`` (environment,
            then pymatgen's settings file).

    Returns:
        The key, stripped of surrounding white space.

    Raises:
        CrystalgridError: no key anywhere, or a key that is not 32 printable characters (the
            message gives the length, never the key).
    """
    key = api_key or os.environ.get("MP_API_KEY") or os.environ.get("PMG_MAPI_KEY")
    key = (key or _pmgrc_key() or "").strip()
    if not key:
        raise CrystalgridError(
            "no Materials Project API key: set MP_API_KEY (or pass --api-key); "
            f"get a key at {KEY_URL}"
        )
    if not _KEY_PATTERN.fullmatch(key):
        raise CrystalgridError(
            "the Materials Project API key is malformed: expected 32 characters without "
            f"spaces, got {len(key)}; copy it again from {KEY_URL}"
        )
    return key


def read_ids(path: str | os.PathLike[str]) -> list[str]:
    """Material ids from a file: one per line, or the first column of a CSV.

    Blank lines, ``#`` comments and a header line (a first field that is not an id, e.g.
    ``material_id``) are skipped; repeats are dropped, keeping the first.

    Raises:
        CrystalgridError: the file cannot be read, a line holds no valid id (named by line
            number), or it holds no id at all.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CrystalgridError(f"cannot read the id list {file}: {exc}") from exc
    ids: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        first = re.split(r"[,\s;]+", text, maxsplit=1)[0].strip().strip("\"'")
        if _ID_PATTERN.fullmatch(first):
            ids.append(first)
        elif not ids:
            continue  # a header line
        else:
            raise CrystalgridError(f"{file}:{number}: {first!r} is not a material id")
    if not ids:
        raise CrystalgridError(f"{file} holds no material ids (e.g. mp-149, one per line)")
    return list(dict.fromkeys(ids))


def _display_url(url: str) -> str:
    """A URL without any user:password part, for messages and provenance."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _scrub(text: str, key: str) -> str:
    return text.replace(key, "<api key>") if key else text


def _describe(exc: BaseException, key: str) -> tuple[int | None, str]:
    """An mp-api / requests error as ``(HTTP status or None, a few words)``, key removed."""
    text = _scrub(str(exc), key)
    match = re.search(r"status code (\d{3})", text)
    if match:
        status = int(match.group(1))
        detail = ""
        if "with message:" in text:
            lines = text.split("with message:", 1)[1].strip().splitlines()
            detail = lines[0][:160] if lines else ""
        return status, f"HTTP {status}" + (f" ({detail})" if detail else "")
    low = text.lower()
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("getaddrinfo failed", "host name not found"),
        ("temporary failure in name resolution", "host name not found"),
        ("timed out", "timed out"),
        ("certificate", "TLS certificate problem"),
        ("connection aborted", "connection aborted"),
        ("connection reset", "connection reset"),
        ("max retries exceeded", "connection failed"),
    ):
        if needle in low:
            return None, reason
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return None, first[:200]


@dataclass(frozen=True)
class _Plan:
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
        assert self.ids is not None
        wanted = self.ids if self.limit is None else self.ids[: self.limit]
        return wanted[index * self.page_size : (index + 1) * self.page_size]

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


def _plan(
    *,
    max_sites: int | None,
    elements: Iterable[str] | str | None,
    max_ehull: float | None,
    ids: Sequence[str] | None,
    limit: int | None,
    include_gnome: bool,
    page_size: int,
) -> _Plan:
    """Check the arguments and build the query (raises CrystalgridError for bad ones)."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise CrystalgridError(f"page size must be 1 to {MAX_PAGE_SIZE}, got {page_size}")
    if limit is not None and limit < 1:
        raise CrystalgridError(f"--limit must be at least 1, got {limit}")
    criteria: dict[str, Any] = {"nsites_min": 1}  # always one server-side filter (docs/fetch.md)
    if max_sites is not None:
        if max_sites < 1:
            raise CrystalgridError(f"--max-sites must be at least 1, got {max_sites}")
        criteria["nsites_max"] = int(max_sites)
    if max_ehull is not None:
        if not max_ehull >= 0:
            raise CrystalgridError(f"--max-ehull must be >= 0 eV/atom, got {max_ehull}")
        criteria["energy_above_hull_max"] = float(max_ehull)
    if elements is not None:
        from pymatgen.core import Element

        symbols = elements.split(",") if isinstance(elements, str) else list(elements)
        clean = sorted({s.strip().capitalize() for s in symbols if s.strip()})
        bad = [s for s in clean if not Element.is_valid_symbol(s)]
        if bad:
            raise CrystalgridError(f"--elements: not element symbols: {', '.join(bad)}")
        if not clean:
            raise CrystalgridError("--elements is empty")
        criteria["elements"] = ",".join(clean)
    if not include_gnome:
        criteria["batch_id_not_eq"] = GNOME_BATCH_ID
    id_list = None
    if ids is not None:
        id_list = list(dict.fromkeys(str(i).strip() for i in ids if str(i).strip()))
        bad = [i for i in id_list if not _ID_PATTERN.fullmatch(i)]
        if bad:
            raise CrystalgridError(f"not material ids: {', '.join(bad[:5])}")
        if not id_list:
            raise CrystalgridError("the id list is empty")
    return _Plan(criteria, int(page_size), limit, id_list, bool(include_gnome))


def _heartbeat(url: str, shown: str, timeout_s: float, retries: int, backoff_s: float) -> None:
    """Call ``url`` (the endpoint's heartbeat) until it answers: at most ``retries + 1`` tries
    and :data:`HEARTBEAT_DEADLINE_S` in all; each try waits ``timeout_s`` at most.

    Raises:
        CrystalgridError: the endpoint never answered (stalled, refused, unreachable).
    """
    import random

    import requests

    deadline = time.monotonic() + HEARTBEAT_DEADLINE_S
    attempt, last, stalled = 0, "no answer", True
    while attempt <= retries:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        wait = min(timeout_s, remaining)
        try:
            answer = requests.get(url, timeout=(wait, wait))
        except requests.Timeout:
            last, stalled = f"no answer within {wait:g} s", True
        except requests.ConnectionError as exc:
            last, stalled = _describe(exc, "")[1], False
        else:
            if answer.status_code not in RETRY_STATUSES:
                return  # an answer: the client takes it from here (403 and others included)
            last, stalled = f"HTTP {answer.status_code}", False
            after = answer.headers.get("Retry-After", "")
            if after.isdigit():
                time.sleep(min(float(after), max(0.0, deadline - time.monotonic())))
                attempt += 1
                continue
        attempt += 1
        pause = min(60.0, backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
    if stalled:
        raise CrystalgridError(
            f"the Materials Project API at {shown} did not answer ({attempt} tries, last: "
            f"{last}); check the network or MP_API_ENDPOINT, then run the same command again"
        )
    raise CrystalgridError(
        f"cannot reach the Materials Project API at {shown}: {last} ({attempt} tries); check "
        "the network or MP_API_ENDPOINT, then run the same command again"
    )


def _open_client(
    key: str, endpoint: str | None, retries: int, backoff_s: float, timeout_s: float
) -> Any:
    """An ``MPRester`` (plain-dict documents, quiet, ``timeout_s`` per request) with the wider
    retry policy mounted, after the endpoint's heartbeat answered (:func:`_heartbeat`)."""
    try:
        import requests
        from mp_api.client import MPRester
        from mp_api.client.core import MPRestError
        from mp_api.client.core.settings import MAPI_CLIENT_SETTINGS
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry
    except ImportError as exc:
        raise CrystalgridError(
            f"crystalgrid fetch needs mp-api ({exc.name} is missing): pip install 'crystalgrid[mp]'"
        ) from exc
    base = endpoint or MAPI_CLIENT_SETTINGS.ENDPOINT
    shown = _display_url(base)
    _heartbeat(base.rstrip("/") + "/heartbeat", shown, timeout_s, retries, backoff_s)
    try:
        client = MPRester(
            api_key=key,
            endpoint=endpoint,
            use_document_model=False,
            mute_progress_bars=True,
        )
    except MPRestError as exc:
        raise CrystalgridError(
            f"the Materials Project client refused to start: {_describe(exc, key)[1]}"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:  # incl. requests' JSONDecodeError
        raise CrystalgridError(
            f"{shown} does not answer like the Materials Project API "
            f"(heartbeat: {type(exc).__name__})"
        ) from None
    except requests.RequestException as exc:
        raise CrystalgridError(
            f"cannot reach the Materials Project API at {shown}: {_describe(exc, key)[1]}"
        ) from None
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        backoff_factor=backoff_s,
        backoff_max=60.0,
        backoff_jitter=backoff_s,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer reaches mp-api, which names its status
    )

    class TimeoutAdapter(HTTPAdapter):
        """Every request of the session waits ``timeout_s`` at most to connect and per read
        (mp-api's sub-clients each pass their own default otherwise)."""

        def send(self, request: Any, **kwargs: Any) -> Any:
            kwargs["timeout"] = (timeout_s, timeout_s)
            return super().send(request, **kwargs)

    adapter = TimeoutAdapter(max_retries=retry)
    client.session.mount("http://", adapter)
    client.session.mount("https://", adapter)
    return client


class _PageError(Exception):
    def __init__(self, reason: str, *, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


def _to_record(doc: dict[str, Any]) -> dict[str, Any]:
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


def _page_units(plan: _Plan, index: int, target: int) -> int:
    """Progress units of a page: documents (filters) or ids asked for (id lists)."""
    if plan.ids is not None:
        return len(plan.page_ids(index))
    return min(plan.page_size, target - index * plan.page_size)


def _fetch_page(
    rester: Any, plan: _Plan, index: int, target: int, total: int | None, key: str, retries: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Download one page: ``(records, ids asked for and not returned)``; raises _PageError."""
    import requests
    from mp_api.client.core import MPRestError

    criteria = plan.page_criteria(index, target)
    try:
        result = rester._query_resource(
            criteria=dict(criteria, _fields=",".join(FIELDS)),  # checked once in _fetch
            num_chunks=1,
            chunk_size=criteria["_limit"],
        )
    except requests.RequestException as exc:  # a timeout or a dropped connection, retried
        raise _PageError(f"{_request_failure(exc)} after {retries} retries", fatal=True) from None
    except MPRestError as exc:
        status, reason = _describe(exc, key)
        if status in RETRY_STATUSES or status is None:
            reason += f" after {retries} retries"
        raise _PageError(reason, fatal=status is None or status in (401, 403)) from None
    docs = [d for d in result.get("data") or [] if isinstance(d, dict) and d.get("material_id")]
    if plan.ids is not None:
        wanted = plan.page_ids(index)
        by_id = {str(d["material_id"]): d for d in docs}
        records = [_to_record(by_id[i]) for i in wanted if i in by_id]
        return records, [i for i in wanted if i not in by_id]
    server_total = (result.get("meta") or {}).get("total_doc")
    if total is not None and server_total is not None and server_total != total:
        raise _PageError(
            f"the server's count for this query changed from {total} to {server_total}; "
            "the database changed: fetch into a new --out directory",
            fatal=True,
        )
    if len(docs) != criteria["_limit"]:
        raise _PageError(f"expected {criteria['_limit']} documents, got {len(docs)}")
    return [_to_record(d) for d in docs], []


def _check_resume(existing: dict[str, Any], query: dict[str, Any], out: Path) -> None:
    """Refuse to resume into a collection made by another query (before any request)."""
    if existing.get("source") != SOURCE:
        raise CrystalgridError(
            f"{out} holds a collection from {existing.get('source')!r}, not the Materials "
            "Project; choose another --out directory"
        )
    if existing.get("query") != query:
        old, new = existing.get("query") or {}, query
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise CrystalgridError(
            f"{out} was fetched with a different query (differs in: {', '.join(diff)}); "
            "repeat the original command to resume it, or choose another --out directory"
        )


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
        ids: fetch these material ids (e.g. the CGCNN list; see :func:`read_ids`).
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
        CrystalgridError: a missing, malformed or refused key; an unreachable endpoint; bad
            arguments; a directory holding another query's collection or something else; a
            database that changed since the collection was started. The message is one line
            and never contains the key.
    """
    started = time.monotonic()
    key = resolve_api_key(api_key)
    try:
        return _fetch(
            Path(out_dir),
            key=key,
            endpoint=endpoint or os.environ.get("MP_API_ENDPOINT") or None,
            plan=_plan(
                max_sites=max_sites,
                elements=elements,
                max_ehull=max_ehull,
                ids=ids,
                limit=limit,
                include_gnome=include_gnome,
                page_size=page_size,
            ),
            retries=DEFAULT_RETRIES if retries is None else int(retries),
            backoff_s=DEFAULT_BACKOFF_S if backoff_s is None else float(backoff_s),
            timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s),
            quiet=quiet,
            started=started,
        )
    except CrystalgridError as exc:
        message = str(exc)
        if key in message:
            raise CrystalgridError(_scrub(message, key)) from None
        raise


def _request_failure(exc: BaseException) -> str:
    """A failed HTTP request in a few words (timeouts named as such)."""
    import requests

    text = str(exc).lower()
    if isinstance(exc, requests.Timeout) or "timed out" in text or "timeout" in text:
        return "no answer within the timeout (--timeout)"
    return f"{type(exc).__name__}"


def _fetch(
    out: Path,
    *,
    key: str,
    endpoint: str | None,
    plan: _Plan,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    quiet: bool,
    started: float,
) -> FetchReport:
    import requests
    from mp_api.client.core import MPRestError

    query = plan.query
    check_target(out)
    existing = load_manifest(out)
    if existing is not None:
        _check_resume(existing, query, out)
        if existing.get("complete"):
            # Nothing is missing: no request at all (works offline), if every page checks out.
            try:
                source = open_collection(out)
            except CrystalgridError:
                pass  # a page went missing or bad: the writer drops it and it is fetched again
            else:
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

    client = _open_client(key, endpoint, retries, backoff_s, timeout_s)
    shown = _display_url(client.endpoint)
    db_version = client.db_version or None
    rester = client.materials.summary
    # mp-api checks `fields` against the document model on every call (~50 ms per field);
    # check once here and pass `_fields` directly.
    unknown = sorted(set(FIELDS) - set(rester.available_fields))
    if unknown:
        raise CrystalgridError(
            f"mp-api {_package_version('mp-api')} does not know the summary fields "
            f"{', '.join(unknown)}: upgrade it (pip install -U mp-api)"
        )

    # One cheap request first: it checks the key and gives the total (filters) or the count
    # of the first slice (ids).
    probe = dict(plan.criteria, _limit=1, _fields="material_id")
    if plan.ids is not None:
        probe["material_ids"] = ",".join(plan.page_ids(0))
    try:
        count = int(rester.count(probe))
    except requests.RequestException as exc:
        raise CrystalgridError(
            f"the Materials Project API at {shown} stopped answering: {_request_failure(exc)}; "
            "run the same command again"
        ) from None
    except MPRestError as exc:
        status, reason = _describe(exc, key)
        if status in (401, 403):
            raise CrystalgridError(
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

    if plan.ids is not None:
        total = None
        target = len(plan.ids) if plan.limit is None else min(plan.limit, len(plan.ids))
    else:
        total = count
        target = total if plan.limit is None else min(plan.limit, total)
    n_pages = math.ceil(target / plan.page_size)

    if existing is not None:
        if existing.get("database_version") != db_version:
            raise CrystalgridError(
                f"{out} was fetched from Materials Project database "
                f"{existing.get('database_version')}, the server now serves {db_version}: "
                "the pages would not line up; fetch into a new --out directory"
            )
        if total is not None and existing.get("server_total") != total:
            raise CrystalgridError(
                f"{out} was started when the query matched {existing.get('server_total')} "
                f"materials, it now matches {total}: fetch into a new --out directory"
            )
        manifest = dict(existing, complete=False, expected_pages=n_pages)
    else:
        manifest = {
            "format": FORMAT,
            "source": SOURCE,
            "query": query,
            "database_version": db_version,
            "server_version": _server_version(client),
            "endpoint": shown,
            "mp_api_version": _package_version("mp-api"),
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

    failed: list[PageFailure] = []
    fetched = docs = consecutive = 0
    stopped = ""
    with CollectionWriter(out, manifest) as writer:
        todo = [k for k in range(n_pages) if not writer.has_page(k)]
        reused = n_pages - len(todo)
        pending = set(todo)
        done_units = sum(_page_units(plan, k, target) for k in range(n_pages) if k not in pending)
        from tqdm.auto import tqdm

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
                    records, absent = _fetch_page(rester, plan, index, target, total, key, retries)
                except _PageError as exc:
                    failed.append(PageFailure(index, exc.reason))
                    consecutive += 1
                    if exc.fatal or consecutive >= MAX_CONSECUTIVE_FAILURES:
                        left = len(todo) - position - 1
                        if left:
                            stopped = f"stopped after page {index} failed ({exc.reason}); "
                            stopped += f"{left} more pages not tried"
                        break
                    continue
                consecutive = 0
                extra = {"missing_ids": absent} if absent else {}
                writer.write_page(index, records, **extra)
                fetched += 1
                docs += len(records)
                bar.update(_page_units(plan, index, target))
        download_seconds = time.monotonic() - loop_started

        missing = _missing_ids(writer.manifest)
        complete = len(writer.manifest["pages"]) == n_pages
        if complete:
            seen: set[str] = set()
            dupes: list[str] = []
            for material_id in writer.material_ids():
                if material_id in seen:
                    dupes.append(material_id)
                seen.add(material_id)
            if dupes:
                writer.update(complete=False)
                raise CrystalgridError(
                    f"{out}: {len(dupes)} material ids appear twice across pages (e.g. "
                    f"{dupes[0]}): the server's order changed between runs; "
                    "fetch into a new --out directory"
                )
        writer.update(complete=complete)
        count_now = int(writer.manifest["count"])

    return FetchReport(
        path=out,
        count=count_now,
        pages=n_pages,
        pages_fetched=fetched,
        pages_reused=reused,
        docs_fetched=docs,
        failed=failed,
        missing_ids=missing,
        database_version=db_version,
        seconds=time.monotonic() - started,
        download_seconds=download_seconds,
        complete=complete,
        stopped=stopped,
    )


def _missing_ids(manifest: dict[str, Any]) -> list[str]:
    """Ids asked for and not returned, over all pages in page order (``ids`` queries)."""
    return [i for _, info in sorted(manifest["pages"].items()) for i in info.get("missing_ids", [])]


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _server_version(client: Any) -> str | None:
    """The API server's emmet version from the heartbeat (cached by mp-api), if it gave one."""
    try:
        found = client.get_emmet_version(client.endpoint)
    except (AttributeError, ValueError, KeyError, OSError):
        return None
    return str(found) if found is not None else None
