"""One writer per store: a lock file beside the store while a build writes it.

``<store>.lock`` (beside the store, so that a build that recreates the store keeps it) holds
JSON: the host, the process id, when the build started, a random token and a heartbeat that
the build refreshes every :data:`HEARTBEAT_S` seconds. A second build into the same store is
refused with a one-line error that names the first. A lock is *stale*, and taken over, when its
process is gone (same host: the pid no longer runs) or its heartbeat is older than
:data:`STALE_AFTER_S` (another host, or a process that hangs or was paused). The build removes
its lock when it ends, also on an error, and only while the lock is still its own; ``kill -9``
leaves it behind, and the next build takes it over.

The lock stays its holder's: every heartbeat reads the lock before it writes, and a build whose
lock was taken over (it was paused past :data:`STALE_AFTER_S`, say) or removed stops, in one
line naming the new holder, and writes no more blocks (:meth:`LockGuard.check` runs before
each block is written). A heartbeat that cannot be written is logged; after
:data:`FAILED_BEATS_TO_STOP` in a row the build stops, since another build may then take over.
The two intervals can be set per build, or by the environment variables
``CRYSTALGRID_LOCK_HEARTBEAT`` and ``CRYSTALGRID_LOCK_STALE`` (seconds).

Local locks are created atomically (a hard link of a complete file) and refreshed by an
atomic rename (:func:`crystalgrid.fileio.write_atomic`). It is a file with a heartbeat rather
than a kernel ``flock`` (what a fetch's collection takes, :func:`crystalgrid.fileio.hold_flock`)
because a store may be an object store and its writers other hosts: Dask workers check the
token before each block, and a build that died leaves a lock that others must see as stale.

On object stores (``s3://``) there is no atomic create: the lock is written, read back and
compared, which catches all but two builds started within the same second. A heartbeat
reads, then writes: a takeover in the milliseconds between the two is overwritten, and then
the build that took over stops at its next heartbeat, so one build goes on.
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
from dataclasses import dataclass, field
from typing import Any

from crystalgrid.errors import ConfigError, CrystalgridError, LockedError
from crystalgrid.fileio import write_atomic
from crystalgrid.remote import remote_options

__all__ = [
    "FAILED_BEATS_TO_STOP",
    "HEARTBEAT_S",
    "STALE_AFTER_S",
    "HeldLock",
    "LockGuard",
    "lock_path",
    "store_lock",
]

log = logging.getLogger(__name__)

#: Seconds between heartbeats of a running build (``CRYSTALGRID_LOCK_HEARTBEAT``).
HEARTBEAT_S = 30.0
#: A lock whose heartbeat is older than this (seconds) is stale (``CRYSTALGRID_LOCK_STALE``).
STALE_AFTER_S = 600.0
#: Heartbeats in a row that could not be written before the build stops.
FAILED_BEATS_TO_STOP = 3


def lock_path(location: str) -> str:
    """Where the lock of the store at ``location`` lives (a path or URL)."""
    return location.rstrip("/") + ".lock"


def _seconds(value: float | None, variable: str, default: float) -> float:
    """``value``, else the environment ``variable``, else ``default`` (seconds > 0)."""
    if value is None:
        text = os.environ.get(variable)
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{variable} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ConfigError(f"{variable} must be a number of seconds > 0, got {value}")
    return float(value)


def intervals(
    heartbeat_s: float | None = None, stale_after_s: float | None = None
) -> tuple[float, float]:
    """The heartbeat interval and the staleness (s): the arguments, else the environment,
    else :data:`HEARTBEAT_S` and :data:`STALE_AFTER_S`.

    Raises:
        ConfigError: a value that is not a positive number, or a staleness shorter than two
            heartbeats (a live build's lock would look stale).
    """
    beat = _seconds(heartbeat_s, "CRYSTALGRID_LOCK_HEARTBEAT", HEARTBEAT_S)
    stale = _seconds(stale_after_s, "CRYSTALGRID_LOCK_STALE", STALE_AFTER_S)
    if stale < 2 * beat:
        raise ConfigError(
            f"the lock's staleness ({stale:g} s) must be at least two heartbeats ({beat:g} s)"
        )
    return beat, stale


def _filesystem(path: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(path, **remote_options(path, storage_options))


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


def _stale(holder: dict[str, Any], now: float, stale_after_s: float) -> str | None:
    """Why ``holder`` is stale, or ``None`` when its build still runs."""
    if not holder:
        return "an unreadable lock"
    if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1))):
        return f"process {holder.get('pid')} is gone"
    age = now - float(holder.get("heartbeat", 0))
    if age > stale_after_s:
        return f"no heartbeat for {age:.0f} s"
    return None


def _describe(holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return f"process {holder.get('pid')} on {holder.get('host')}, started {started}"


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols


def _write(fs: Any, path: str, record: dict[str, Any], *, exclusive: bool) -> bool:
    """Write the lock; with ``exclusive``, only if none exists (atomic on local disks, where
    a reader never sees a lock half written)."""
    data = json.dumps(record).encode()
    if _is_local(fs):
        return write_atomic(path, data, exclusive=exclusive)
    if exclusive and fs.exists(path):  # object stores: look, then write (not atomic)
        return False
    with fs.open(path, "wb") as fh:
        fh.write(data)
    return True


@dataclass(frozen=True)
class LockGuard:
    """What a build task needs to check that the build still holds its store's lock (it
    travels to the workers).

    Attributes:
        location: the store (path or URL), for messages.
        path: the lock's path or URL.
        token: the holder's random token.
        storage_options: fsspec options for a URL.
    """

    location: str
    path: str
    token: str
    storage_options: dict[str, Any] | None = None

    def check(self) -> None:
        """Read the lock (one small read) and return if it is still this build's.

        Raises:
            LockedError: the lock was taken over (naming the new holder) or removed.
        """
        fs, fs_path = _filesystem(self.path, self.storage_options)
        holder = _read(fs, fs_path)
        if holder is None or holder.get("token") != self.token:
            raise LockedError(_lost_message(self.location, self.path, holder))


def _lost_message(location: str, path: str, holder: dict[str, Any] | None) -> str:
    if holder is None:
        return (
            f"{location}: this build's lock {path} was removed while it ran; this build stopped "
            "and writes no more (run the same command to resume)"
        )
    if not holder:
        return (
            f"{location}: this build's lock {path} was overwritten by an unreadable one; this "
            "build stopped and writes no more"
        )
    return (
        f"{location}: another build took this build's lock over ({_describe(holder)}), its "
        "heartbeat having stopped (was this build paused?); this build stopped and writes no "
        "more, the other one finishes the store"
    )


@dataclass
class HeldLock:
    """The lock a build holds: :meth:`check` raises once it is lost or cannot be refreshed.

    Attributes:
        guard: what the build's tasks check before they write.
        heartbeat_s: seconds between heartbeats.
    """

    guard: LockGuard
    heartbeat_s: float
    _problem: str | None = field(default=None, repr=False)

    def check(self, *, read: bool = False) -> None:
        """Raise if the heartbeat found the lock taken, removed or unwritable; with ``read``,
        also read the lock now (before a step that must not run once it is lost).

        Raises:
            LockedError: one line naming the new holder, or why the lock failed.
        """
        if self._problem is not None:
            raise LockedError(self._problem)
        if read:
            self.guard.check()


@contextlib.contextmanager
def store_lock(
    location: str,
    storage_options: dict[str, Any] | None = None,
    *,
    heartbeat_s: float | None = None,
    stale_after_s: float | None = None,
) -> Iterator[HeldLock]:
    """Hold the lock of the store at ``location`` for the ``with`` block.

    ``heartbeat_s`` and ``stale_after_s`` (seconds): see :func:`intervals`.

    Raises:
        LockedError: another build holds a live lock on the store (one line naming it), or
            the lock could not be taken in two tries.
        CrystalgridError: the lock cannot be written (the disk's error).
    """
    beat_s, stale_s = intervals(heartbeat_s, stale_after_s)
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
                raise  # a remote store's failure: the caller names it (remote_errors)
            raise CrystalgridError(f"cannot write the build lock {path}: {exc}") from None
        holder = _read(fs, fs_path) if created else None
        if created and holder and holder.get("token") == token:
            break
        holder = _read(fs, fs_path)
        if holder is None:
            continue  # removed meanwhile: try again
        why = _stale(holder, time.time(), stale_s)
        if why is None:
            raise LockedError(
                f"{location} is being built by another build ({_describe(holder)}); wait for "
                f"it to end, or stop it first (its lock: {path})"
            )
        log.warning("taking over the lock of %s: %s (%s)", location, why, _describe(holder))
        with contextlib.suppress(FileNotFoundError):
            fs.rm(fs_path)
    else:
        raise LockedError(f"could not take the build lock {path}; try again")

    # Workers may run in another working directory: they get an absolute path.
    where = os.path.abspath(path) if _is_local(fs) else path
    held = HeldLock(LockGuard(location, where, token, storage_options), beat_s)
    stop = threading.Event()

    def beat() -> None:
        failures = 0
        while not stop.wait(beat_s):
            try:
                current = _read(fs, fs_path)
                if current is None or current.get("token") != token:
                    held._problem = _lost_message(location, path, current)
                    return  # the build raises it at its next check
                record["heartbeat"] = time.time()
                _write(fs, fs_path, record, exclusive=False)
            except Exception as exc:  # noqa: BLE001 - any failure of the storage counts
                failures += 1
                log.warning(
                    "cannot refresh the build lock %s (%s of %s tries): %s",
                    path,
                    failures,
                    FAILED_BEATS_TO_STOP,
                    exc,
                )
                if failures >= FAILED_BEATS_TO_STOP:
                    held._problem = (
                        f"{location}: the build lock {path} could not be refreshed "
                        f"{failures} times in a row ({exc}); this build stopped, since another "
                        "build could take the store over (finished blocks are kept: run the same "
                        "command to resume)"
                    )
                    return
            else:
                failures = 0

    thread = threading.Thread(target=beat, name="crystalgrid-lock", daemon=True)
    thread.start()
    try:
        yield held
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError, OSError):
            current = _read(fs, fs_path)
            if current is not None and current.get("token") == token:
                fs.rm(fs_path)
