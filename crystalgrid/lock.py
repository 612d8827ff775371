"""One writer per store: a lock file beside the store while a build writes it.

``<store>.lock`` (beside the store, so that a build that recreates the store keeps it) holds
JSON: the host, the process id, when the build started and a heartbeat that the build
refreshes every :data:`HEARTBEAT_S` seconds. A second build into the same store is refused
with a one-line error that names the first. A lock is *stale*, and taken over, when its
process is gone (same host: the pid no longer runs) or its heartbeat is older than
:data:`STALE_AFTER_S` (another host, or a process that hangs). The build removes its lock when
it ends, also on an error; ``kill -9`` leaves it behind, and the next build takes it over.

Local locks are created atomically (``O_EXCL``). On object stores (``s3://``) there is no
atomic create: the lock is written, read back and compared, which catches all but two builds
started within the same second.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from crystalgrid.errors import CrystalgridError

__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "lock_path", "store_lock"]

log = logging.getLogger(__name__)

#: Seconds between heartbeats of a running build.
HEARTBEAT_S = 30.0
#: A lock whose heartbeat is older than this (seconds) is stale.
STALE_AFTER_S = 600.0


def lock_path(location: str) -> str:
    """Where the lock of the store at ``location`` lives (a path or URL)."""
    return location.rstrip("/") + ".lock"


def _filesystem(path: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(path, **(storage_options or {}))


def _read(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        with fs.open(path, "rb") as fh:
            return json.loads(fh.read().decode())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # a lock cut short while written: treated as stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def _stale(holder: dict[str, Any], now: float) -> str | None:
    """Why ``holder`` is stale, or ``None`` when its build still runs."""
    if not holder:
        return "an unreadable lock"
    if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1))):
        return f"process {holder.get('pid')} is gone"
    age = now - float(holder.get("heartbeat", 0))
    if age > STALE_AFTER_S:
        return f"no heartbeat for {age:.0f} s"
    return None


def _describe(holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return f"process {holder.get('pid')} on {holder.get('host')}, started {started}"


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols


def _write(fs: Any, path: str, record: dict[str, Any], *, exclusive: bool) -> bool:
    """Write the lock; with ``exclusive``, only if none exists (atomic on local disks)."""
    data = json.dumps(record).encode()
    if exclusive and _is_local(fs):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True
    if exclusive and fs.exists(path):  # object stores: look, then write (not atomic)
        return False
    with fs.open(path, "wb") as fh:
        fh.write(data)
    return True


@contextlib.contextmanager
def store_lock(location: str, storage_options: dict[str, Any] | None = None) -> Iterator[None]:
    """Hold the lock of the store at ``location`` for the ``with`` block.

    Raises:
        CrystalgridError: another build holds a live lock on the store (one line naming it),
            or the lock cannot be written.
    """
    path = lock_path(location)
    fs, fs_path = _filesystem(path, storage_options)
    token = uuid.uuid4().hex
    now = time.time()
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": now,
        "heartbeat": now,
        "token": token,
    }
    parent = os.path.dirname(fs_path)
    if parent and _is_local(fs):
        os.makedirs(parent, exist_ok=True)
    for _ in range(2):  # the second try after removing a stale lock
        try:
            created = _write(fs, fs_path, record, exclusive=True)
        except OSError as exc:
            if not _is_local(fs):
                raise  # a remote store's failure: the caller names it (store.remote_errors)
            raise CrystalgridError(f"cannot write the build lock {path}: {exc}") from None
        holder = _read(fs, fs_path) if created else None
        if created and holder and holder.get("token") == token:
            break
        holder = _read(fs, fs_path)
        if holder is None:
            continue  # removed meanwhile: try again
        why = _stale(holder, time.time())
        if why is None:
            raise CrystalgridError(
                f"{location} is being built by another build ({_describe(holder)}); wait for "
                f"it to end, or stop it first (its lock: {path})"
            )
        log.warning("taking over the lock of %s: %s (%s)", location, why, _describe(holder))
        with contextlib.suppress(FileNotFoundError):
            fs.rm(fs_path)
    else:
        raise CrystalgridError(f"could not take the build lock {path}; try again")

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            record["heartbeat"] = time.time()
            with contextlib.suppress(OSError):
                _write(fs, fs_path, record, exclusive=False)

    thread = threading.Thread(target=beat, name="crystalgrid-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError, OSError):
            current = _read(fs, fs_path)
            if current is not None and current.get("token") == token:
                fs.rm(fs_path)
