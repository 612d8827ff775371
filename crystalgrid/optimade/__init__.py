"""Structures from any OPTIMADE provider (Alexandria, OQMD, JARVIS, COD, NOMAD, the Materials
Project, ...), fetched into a crystalgrid collection: ``crystalgrid fetch --optimade NAME``.

The JSON API is spoken with the standard library (no extra package): pages follow the server's
``links.next`` (offset or cursor paging alike), each page is written as it arrives, and the same
call resumes an interrupted fetch. The collection records the provider, its base URL, the
filter, the API version and the licence the provider states.
"""

from crystalgrid.optimade._fetch import (
    DEFAULT_PAGE_SIZE,
    OPTIMADE_CITATION,
    PROVIDERS_URL,
    SOURCE,
    OptimadeReport,
    Provider,
    fetch_optimade,
    resolve_provider,
)
from crystalgrid.optimade._http import HttpSettings, OptimadeRequestError, ProviderError

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "OPTIMADE_CITATION",
    "PROVIDERS_URL",
    "SOURCE",
    "HttpSettings",
    "OptimadeReport",
    "OptimadeRequestError",
    "Provider",
    "ProviderError",
    "fetch_optimade",
    "resolve_provider",
]
