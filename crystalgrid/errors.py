"""Exceptions that carry a one-line, user-facing message.

The CLI turns :class:`CrystalgridError` into that line on stderr and exit status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "BadInputError",
    "ConfigError",
    "CrystalgridError",
    "CrystalgridWarning",
    "IntegrityError",
    "LockedError",
    "NotFoundError",
    "PrecisionWarning",
    "RejectedStructure",
    "RemoteStorageError",
    "first_line",
]


class CrystalgridError(Exception):
    """A problem with the user's input or environment, stated in one line.

    Raised in a ``DataLoader`` worker, it reaches the loop as torch builds it again from the
    worker's whole traceback; the one line is kept, with the worker named at its end.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_from_worker(args[0], type(self)),)
        super().__init__(*args)


def _from_worker(message: str, kind: type) -> str:
    """The one line in torch's re-raise of an error of type ``kind`` from a DataLoader worker
    ("Caught K in DataLoader worker process N.\nOriginal Traceback ...\nmodule.K: line"),
    as "line (in DataLoader worker process N)"; any other message unchanged."""
    head, _, rest = message.partition(".\nOriginal Traceback")
    where = head.removeprefix(f"Caught {kind.__name__} ")
    if not rest or where == head:
        return message
    _, found, line = rest.rpartition(f"\n{kind.__module__}.{kind.__qualname__}: ")
    return f"{line.strip()} ({where})" if found and line.strip() else message


class ConfigError(CrystalgridError, ValueError):
    """An invalid setting of a configuration (grid spec, filters, build, training).

    Both a :class:`CrystalgridError` (one line from the CLI) and a ``ValueError`` (what
    Python code expects of a bad argument).
    """


class BadInputError(CrystalgridError, ValueError):
    """Input data the package cannot use: a structure that does not fit the box, a latent of
    the wrong shape, an argument out of its range. Also a ``ValueError``."""


class NotFoundError(CrystalgridError, FileNotFoundError):
    """A file, store, model or split that does not exist. Also a ``FileNotFoundError``."""


class IntegrityError(CrystalgridError, ValueError):
    """Stored data that is damaged or inconsistent (checksum, undecodable, changed inputs)."""


class LockedError(CrystalgridError, RuntimeError):
    """A store or collection locked by another process, or whose lock this process lost."""


class RemoteStorageError(CrystalgridError):
    """Remote storage (an ``s3://`` or other fsspec URL) failed: the endpoint is unreachable,
    the credentials are refused or missing, the bucket does not exist, or access is denied.
    The message is one line and names the location, never a credential."""


class CrystalgridWarning(UserWarning):
    """Something the user should know that does not stop the work; the CLI prints it as
    one line (``crystalgrid: warning: ...``)."""


class PrecisionWarning(CrystalgridWarning):
    """A precision asked for that this processor only emulates (bf16 on a CPU without bf16
    instructions): the work goes on, many times slower than it would in fp32."""


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


def first_line(exc: BaseException) -> str:
    """``exc`` in one line: ``"Type: the first line of its message"`` (or just the type)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
