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
JSON, no pydantic round trip): ``count`` for the total and ``_query_resource`` with
``num_chunks=1`` for one page, the same call ``search`` makes for its first page (isolated in
``_pages._query_page``). The client's HTTP session gets a wider retry policy than mp-api's
own (which retries 429, 502 and 504 three times): 429, 500, 502, 503 and 504 and connection
errors are retried ``retries`` times with exponential backoff and jitter, honouring
``Retry-After``.

Nothing waits forever. Every request has a connect and read timeout (``timeout_s``). Before
the client starts, crystalgrid calls the endpoint's heartbeat itself, with that timeout,
retrying for at most ``HEARTBEAT_DEADLINE_S`` (120 s) (mp-api's own heartbeat call has no
timeout, so a server that accepts the connection and never answers would hang it). A request
that still times out after its retries during the download stops the fetch after that page
(exit status 1, the page listed as failed); the pages already written stay, and the same
command resumes.

The API key is never written: not to the collection, the report, or any message.

The names here are the public face; the steps live in private modules: ``_keys`` (the key and
id lists), ``_client`` (timeouts, retries, the heartbeat), ``_plan`` (the query as pages),
``_pages`` (one page's request and records) and ``_fetch`` (the steps in order, the report).
"""

from __future__ import annotations

from crystalgrid.mp._fetch import DEFAULT_OUT, FetchReport, PageFailure, fetch
from crystalgrid.mp._keys import read_ids, resolve_api_key
from crystalgrid.mp._plan import DEFAULT_PAGE_SIZE, FIELDS

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
