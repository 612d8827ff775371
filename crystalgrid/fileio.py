"""Local file writes that every layer shares: atomic replacement and an exclusive flock.

:func:`write_atomic` writes a file so that a reader sees either the old file or the whole new
one (a temporary file beside the target, then a rename; optionally fsynced, or created only
where none exists). :func:`hold_flock` holds a kernel advisory lock on a file. Both work on
local paths only; stores and sources behind URLs go through fsspec and zarr instead.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from crystalgrid.errors import CrystalgridError

try:  # POSIX advisory locks; elsewhere a flock is not taken
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["TMP_SUFFIX", "fsync_dir", "hold_flock", "write_atomic"]

#: The suffix of the temporary files of :func:`write_atomic` (``.<name>.<pid>-<tag>.tmp``).
TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename in folder ``path`` durable (POSIX); a no-op where folders cannot be
    opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | memoryview,
    *,
    durable: bool = False,
    exclusive: bool = False,
    suffix: str = TMP_SUFFIX,
) -> bool:
    """Write ``data`` to ``path`` so that no reader sees a part of it.

    The bytes go to a temporary file beside ``path`` (``.<name>.<pid>-<tag><suffix>``, its
    folders made as needed), which is then renamed over ``path``, or with ``exclusive``
    hard-linked to it only if ``path`` does not exist. ``durable`` fsyncs the file before
    the rename and the folder after it (the write survives a power loss). The temporary
    file is removed in every case.

    Returns:
        True; False when ``exclusive`` and ``path`` exists (nothing written).

    Raises:
        OSError: the write failed (a full disk: ``ENOSPC``); ``path`` is unchanged.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    if durable:
        fsync_dir(target.parent)
    return True


@contextlib.contextmanager
def hold_flock(path: str | os.PathLike[str], busy: str) -> Iterator[IO[str]]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block.

    The kernel releases it when the block ends or the process dies, so it is never stale;
    it only excludes processes on this machine (and not on every network file system).
    Where ``fcntl`` is missing (Windows) nothing is locked.

    Raises:
        CrystalgridError: ``busy``, when another process holds the lock.
    """
    handle = open(path, "a")  # noqa: SIM115 - held for the block
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise CrystalgridError(busy) from None
        yield handle
    finally:
        handle.close()  # closing the file releases the flock
