"""The HTTP client: mp-api's ``MPRester`` with timeouts and a wider retry policy.

Nothing waits forever. Every request has a connect and read timeout (``timeout_s``). Before
the client starts, crystalgrid calls the endpoint's heartbeat itself, with that timeout,
retrying for at most :data:`HEARTBEAT_DEADLINE_S` (mp-api's own heartbeat call has no
timeout, so a server that accepts the connection and never answers would hang it). The
client's HTTP session retries 429, 500, 502, 503 and 504 and connection errors ``retries``
times with exponential backoff and jitter, honouring ``Retry-After`` (mp-api's own policy
retries 429, 502 and 504 three times).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from crystalgrid.errors import ConfigError, CrystalgridError
from crystalgrid.mp._keys import scrub

__all__ = [
    "DEFAULT_BACKOFF_S",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "HEARTBEAT_DEADLINE_S",
    "RETRY_STATUSES",
    "ClientSettings",
    "client_settings",
    "describe",
    "display_url",
    "open_client",
    "package_version",
    "request_failure",
    "server_version",
]

DEFAULT_RETRIES = 5
#: The backoff factor (s): waits grow as ``backoff_s * 2**n``, at most 60 s.
DEFAULT_BACKOFF_S = 1.0
#: Seconds to wait for a connection and for each answer (``--timeout``).
DEFAULT_TIMEOUT_S = 20.0
#: How long the first contact (the heartbeat) may take in all, retries included, before a
#: stalled or unreachable endpoint is reported.
HEARTBEAT_DEADLINE_S = 120.0
RETRY_STATUSES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class ClientSettings:
    """How the client retries and waits.

    Attributes:
        retries: retries per request for 429, 5xx and connection errors.
        backoff_s: backoff factor (s).
        timeout_s: seconds to wait for a connection and for each answer.
    """

    retries: int
    backoff_s: float
    timeout_s: float


def client_settings(
    retries: int | None = None, backoff_s: float | None = None, timeout_s: float | None = None
) -> ClientSettings:
    """The settings asked for, the module's defaults (read now) for those not given.

    Raises:
        ConfigError: negative retries, or a backoff or timeout that is not a positive number.
    """
    settings = ClientSettings(
        DEFAULT_RETRIES if retries is None else int(retries),
        DEFAULT_BACKOFF_S if backoff_s is None else float(backoff_s),
        DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s),
    )
    if settings.retries < 0:
        raise ConfigError(f"retries must be at least 0, got {settings.retries}")
    if not settings.backoff_s >= 0 or not settings.timeout_s > 0:
        raise ConfigError(
            f"the backoff must be >= 0 s and the timeout > 0 s, got {settings.backoff_s:g} "
            f"and {settings.timeout_s:g}"
        )
    return settings


def display_url(url: str) -> str:
    """A URL without any user:password part, for messages and provenance."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def describe(exc: BaseException, key: str) -> tuple[int | None, str]:
    """An mp-api / requests error as ``(HTTP status or None, a few words)``, key removed."""
    text = scrub(str(exc), key)
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


def _heartbeat(url: str, shown: str, settings: ClientSettings) -> None:
    """Call ``url`` (the endpoint's heartbeat) until it answers: at most ``retries + 1`` tries
    and :data:`HEARTBEAT_DEADLINE_S` in all; each try waits ``timeout_s`` at most.

    Raises:
        CrystalgridError: the endpoint never answered (stalled, refused, unreachable).
    """
    import random

    import requests

    retries, backoff_s, timeout_s = settings.retries, settings.backoff_s, settings.timeout_s
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
            last, stalled = describe(exc, "")[1], False
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


def open_client(key: str, endpoint: str | None, settings: ClientSettings) -> Any:
    """An ``MPRester`` (plain-dict documents, quiet, ``timeout_s`` per request) with the wider
    retry policy mounted, after the endpoint's heartbeat answered (:func:`_heartbeat`)."""
    try:
        import requests
        from mp_api.client import MPRester
        from mp_api.client.core import MPRestError
        from mp_api.client.core.settings import MAPI_CLIENT_SETTINGS
        from requests import PreparedRequest, Response
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry
    except ImportError as exc:
        raise CrystalgridError(
            f"crystalgrid fetch needs mp-api ({exc.name} is missing): pip install 'crystalgrid[mp]'"
        ) from exc
    base = endpoint or MAPI_CLIENT_SETTINGS.ENDPOINT
    shown = display_url(base)
    _heartbeat(base.rstrip("/") + "/heartbeat", shown, settings)
    retries, backoff_s, timeout_s = settings.retries, settings.backoff_s, settings.timeout_s
    try:
        client = MPRester(
            api_key=key,
            endpoint=endpoint,
            use_document_model=False,
            mute_progress_bars=True,
        )
    except MPRestError as exc:
        raise CrystalgridError(
            f"the Materials Project client refused to start: {describe(exc, key)[1]}"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:  # incl. requests' JSONDecodeError
        raise CrystalgridError(
            f"{shown} does not answer like the Materials Project API "
            f"(heartbeat: {type(exc).__name__})"
        ) from None
    except requests.RequestException as exc:
        raise CrystalgridError(
            f"cannot reach the Materials Project API at {shown}: {describe(exc, key)[1]}"
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

        def send(
            self,
            request: PreparedRequest,
            stream: bool = False,
            timeout: Any = None,
            verify: Any = True,
            cert: Any = None,
            proxies: dict[str, str] | None = None,
        ) -> Response:
            timeout = (timeout_s, timeout_s)
            return super().send(request, stream, timeout, verify, cert, proxies)

    adapter = TimeoutAdapter(max_retries=retry)
    client.session.mount("http://", adapter)
    client.session.mount("https://", adapter)
    return client


def request_failure(exc: BaseException) -> str:
    """A failed HTTP request in a few words (timeouts named as such)."""
    import requests

    text = str(exc).lower()
    if isinstance(exc, requests.Timeout) or "timed out" in text or "timeout" in text:
        return "no answer within the timeout (--timeout)"
    return f"{type(exc).__name__}"


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def server_version(client: Any) -> str | None:
    """The API server's emmet version from the heartbeat (cached by mp-api), if it gave one."""
    try:
        found = client.get_emmet_version(client.endpoint)
    except (AttributeError, ValueError, KeyError, OSError):
        return None
    return str(found) if found is not None else None
