"""Locations behind URLs, shared by the sources, the store and the build lock.

:func:`is_url` tells an fsspec URL (``s3://bucket/x.zarr``) from a local path;
:func:`remote_options` gives the fsspec options of a URL, with timeouts that make a stalled
endpoint an error in bounded time; :func:`remote_errors` turns a remote-storage failure into
a one-line :class:`~crystalgrid.errors.RemoteStorageError`; :func:`store_key` puts a key
under a group's path in a store.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from crystalgrid.errors import CrystalgridError, RemoteStorageError, first_line

__all__ = [
    "S3_CONFIG",
    "is_url",
    "remote_errors",
    "remote_options",
    "remote_reason",
    "store_key",
]


def is_url(location: str | os.PathLike[str]) -> bool:
    """True for ``s3://...`` and other fsspec URLs; False for local paths."""
    return "://" in str(location) and not str(location).startswith("file://")


def store_key(prefix: str, key: str) -> str:
    """``key`` under the group at path ``prefix`` of a store (``""``: the store's root)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key


#: botocore's timeouts (s) and attempts for ``s3://`` stores and sources, unless the caller's
#: ``storage_options`` or fsspec's configuration (``FSSPEC_S3_CONFIG_KWARGS``) set them. s3fs
#: tries a request that timed out 5 times, each with these attempts, so an endpoint that stops
#: answering fails a read in minutes rather than many (measured in docs/reliability.md).
S3_CONFIG = {
    "connect_timeout": 10,
    "read_timeout": 10,
    "retries": {"max_attempts": 2, "mode": "standard"},
}


def remote_options(
    location: str | os.PathLike[str], storage_options: dict[str, Any] | None
) -> dict[str, Any]:
    """``storage_options`` for the fsspec filesystem of ``location``: for ``s3://``, with
    :data:`S3_CONFIG` where neither they nor fsspec's configuration say otherwise, so that a
    stalled endpoint is an error in bounded time, not a hang."""
    options = dict(storage_options or {})
    if not str(location).startswith(("s3://", "s3a://")):
        return options
    import fsspec.config

    configured = {**fsspec.config.conf.get("s3", {}), **options}
    options["config_kwargs"] = {**S3_CONFIG, **(configured.get("config_kwargs") or {})}
    return options


#: botocore error codes, in words.
_S3_CODES = {
    "AccessDenied": "access denied",
    "AllAccessDisabled": "access denied",
    "NoSuchBucket": "no such bucket",
    "InvalidAccessKeyId": "the access key is not known to the endpoint",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "ExpiredToken": "the credentials have expired",
    "InvalidToken": "the credentials are invalid",
    # Answers to HEAD requests carry no body, only the status.
    "403": "access denied (HTTP 403: the keys are wrong, or lack permission)",
}


def remote_reason(exc: BaseException) -> str | None:
    """A remote-storage failure in a few words, or ``None`` when ``exc`` is something else.

    The endpoint's own error code wins wherever it is in the chain of causes (s3fs raises a
    ``PermissionError`` for every refusal, with botocore's error as its cause).
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    for error in chain:
        response = getattr(error, "response", None)  # botocore's ClientError carries it
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        if code:
            return _S3_CODES.get(code, f"the endpoint answered {code}")
    for error in chain:
        name = type(error).__name__
        module = type(error).__module__ or ""
        if name == "NoCredentialsError":
            return "no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)"
        if name in ("EndpointConnectionError", "ClientConnectorError", "ConnectTimeoutError"):
            return "cannot connect to the endpoint (check AWS_ENDPOINT_URL and the network)"
        if name in ("ReadTimeoutError", "ReadTimeout", "FSTimeoutError", "TimeoutError"):
            return (
                "the endpoint stopped answering (read timeout; check the endpoint and the network)"
            )
        if isinstance(error, PermissionError):
            return "access denied"
        if module.startswith(("botocore", "aiobotocore", "aiohttp")):
            return first_line(error)
    return None


@contextlib.contextmanager
def remote_errors(*locations: Any) -> Iterator[None]:
    """Turn a remote-storage failure into a one-line
    :class:`~crystalgrid.errors.RemoteStorageError` naming the URL among ``locations``;
    anything else (and anything when no location is a URL) passes unchanged."""
    urls = [str(loc) for loc in locations if loc is not None and is_url(str(loc))]
    try:
        yield
    except CrystalgridError:
        raise
    except Exception as exc:
        reason = remote_reason(exc) if urls else None
        if reason is None:
            raise
        raise RemoteStorageError(f"{' or '.join(urls)}: {reason}") from None
