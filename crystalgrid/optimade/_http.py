"""GET a JSON document from an OPTIMADE server: timeouts, retries with backoff, error documents.

The standard library's ``urllib`` only: no extra package. A request that times out (connecting,
or waiting for any part of the answer), loses its connection, or gets HTTP 429 or 5xx is tried
again after ``backoff_s * 2**n`` seconds (at most 60; a ``Retry-After`` header is honoured up to
the same cap). Any other HTTP error ends the request at once with the server's OPTIMADE error
document in one line.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from crystalgrid._version import __version__
from crystalgrid.errors import CrystalgridError

__all__ = ["HttpSettings", "OptimadeRequestError", "ProviderError", "get_json"]

#: Statuses that are tried again (rate limit, server errors, gateway timeouts).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_WAIT_S = 60.0


@dataclass(frozen=True)
class HttpSettings:
    """How requests are made.

    Attributes:
        timeout_s: seconds to wait for a connection and for each read of the answer.
        retries: tries after the first, for timeouts, lost connections, 429 and 5xx.
        backoff_s: the first wait between tries (s); each next one doubles, at most 60 s.
    """

    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 1.0


class ProviderError(CrystalgridError):
    """The provider refused the request (an HTTP 4xx other than 429, with its OPTIMADE error
    document): a bad filter, an unknown field, a missing endpoint. Trying again cannot help."""


class OptimadeRequestError(CrystalgridError):
    """A request still failing after every retry (timeouts, lost connections, 429, 5xx)."""


def get_json(url: str, settings: HttpSettings) -> dict[str, Any]:
    """The JSON object at ``url``.

    Raises:
        ProviderError: a 4xx answer (other than 429), or an answer that is not a JSON object.
        OptimadeRequestError: the request kept failing (named: the last status or error, and
            how many tries).
    """
    last = ""
    retry_after: float | None = None
    for attempt in range(settings.retries + 1):
        if attempt:
            time.sleep(_wait(settings.backoff_s, attempt, retry_after))
        retry_after = None
        request = urllib.request.Request(
            url,
            headers={
                "Accept": "application/vnd.api+json, application/json",
                "User-Agent": f"crystalgrid/{__version__}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout_s) as answer:
                body = answer.read()
        except urllib.error.HTTPError as exc:
            detail = _error_document(exc)
            if exc.code not in RETRY_STATUSES:
                raise ProviderError(f"{url} answered HTTP {exc.code}: {detail}") from None
            last = f"HTTP {exc.code} ({detail})"
            retry_after = _retry_after(exc)
            continue
        except TimeoutError:
            last = f"no answer within {settings.timeout_s:g} s"
            continue
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last = f"connection failed ({reason})"
            continue
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProviderError(f"{url} did not answer JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ProviderError(f"{url} answered a JSON {type(document).__name__}, not an object")
        return document
    tries = settings.retries + 1
    raise OptimadeRequestError(f"{url}: {last} after {tries} tr{'y' if tries == 1 else 'ies'}")


def _wait(backoff_s: float, attempt: int, retry_after: float | None) -> float:
    wait = backoff_s * 2 ** (attempt - 1)
    if retry_after is not None:
        wait = max(wait, retry_after)
    return min(wait, MAX_WAIT_S)


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_document(exc: urllib.error.HTTPError) -> str:
    """The first OPTIMADE error's title and detail, or the HTTP reason."""
    try:
        document = json.loads(exc.read() or b"{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        document = {}
    errors = document.get("errors") if isinstance(document, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        parts = [str(first[k]) for k in ("title", "detail") if first.get(k)]
        if parts:
            return ": ".join(parts).replace("\n", " ")
    return str(exc.reason)
