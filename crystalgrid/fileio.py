"""Local file writes that every layer shares: atomic replacement and an exclusive flock.

:func:`write_atomic` writes a file so that a reader sees either the old file or the whole new
one (a temporary file beside the target, then a rename; optionally fsynced, or created only
where none exists); :func:`open_atomic` does the same for a writer that streams to a file
object. :func:`hold_flock` holds a kernel advisory lock on a file. All three work on
local paths only; stores and sources behind URLs go through fsspec and zarr instead.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from crystalgrid.errors import LockedError

try:  # POSIX advisory locks; elsewhere a flock is not taken
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["TMP_SUFFIX", "fsync_dir", "hold_flock", "open_atomic", "write_atomic"]

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


def _flush(fh: IO[bytes], durable: bool) -> None:
    """With ``durable``, push ``fh``'s bytes to the disk before its rename."""
    if durable:
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def _temporary_beside(target: Path, suffix: str) -> Iterator[Path]:
    """A fresh temporary path beside ``target`` (its folders made), removed when the block
    ends unless it was renamed away."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def open_atomic(
    path: str | os.PathLike[str], *, durable: bool = False, suffix: str = TMP_SUFFIX
) -> Iterator[IO[bytes]]:
    """A binary file to write whose contents replace ``path`` when the block ends.

    The streaming form of :func:`write_atomic` (same temporary file, rename and
    ``durable``), for writers that take a file object, such as ``torch.save``: the bytes
    are never all held in memory. If the block raises, ``path`` is unchanged and the
    temporary file is removed.

    Raises:
        OSError: the write failed (a full disk: ``ENOSPC``); ``path`` is unchanged.
    """
    target = Path(path)
    with _temporary_beside(target, suffix) as tmp:
        with open(tmp, "wb") as fh:
            yield fh
            _flush(fh, durable)
        os.replace(tmp, target)
    if durable:
        fsync_dir(target.parent)


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
    if not exclusive:
        with open_atomic(path, durable=durable, suffix=suffix) as fh:
            fh.write(data)
        return True
    target = Path(path)
    with _temporary_beside(target, suffix) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            _flush(fh, durable)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
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
        LockedError: ``busy``, when another process holds the lock.
    """
    handle = open(path, "a")  # noqa: SIM115 - held for the block
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise LockedError(busy) from None
        yield handle
    finally:
        handle.close()  # closing the file releases the flock
