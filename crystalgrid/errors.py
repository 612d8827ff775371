"""Exceptions that carry a one-line, user-facing message.

The CLI turns :class:`CrystalgridError` into that line on stderr and exit status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "CrystalgridError", "RejectedStructure", "RemoteStorageError"]


class CrystalgridError(Exception):
    """A problem with the user's input or environment, stated in one line."""


class ConfigError(CrystalgridError, ValueError):
    """An invalid setting of a configuration (grid spec, filters, build, training).

    Both a :class:`CrystalgridError` (one line from the CLI) and a ``ValueError`` (what
    Python code expects of a bad argument).
    """


class RemoteStorageError(CrystalgridError):
    """Remote storage (an ``s3://`` or other fsspec URL) failed: the endpoint is unreachable,
    the credentials are refused or missing, the bucket does not exist, or access is denied.
    The message is one line and names the location, never a credential."""


class RejectedStructure(ValueError):  # noqa: N818 - it names what happened to the structure
    """A structure that cannot be gridded; ``reason`` is short and stable (counted by reason).

    Attributes:
        reason: a short machine-friendly category, e.g. ``"disordered"``, ``"max_side"``.
        detail: a human-readable sentence with the specifics.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
