"""Opening a store, local or by URL, and reading its arrays with one-line errors."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Sequence
from typing import Any, Literal, cast

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype

from crystalgrid.errors import (
    CrystalgridError,
    IntegrityError,
    NotFoundError,
    RemoteStorageError,
    first_line,
)
from crystalgrid.remote import is_url, remote_errors, remote_options, remote_reason
from crystalgrid.store._meta import read_meta

__all__ = [
    "BUFFER_PROTOTYPE",
    "METADATA_ERRORS",
    "array_at",
    "arrays_under",
    "create_group",
    "group_at",
    "open_array",
    "open_group",
    "open_store",
    "read_error",
    "read_rows",
]

#: zarr's default buffers, for reading and writing store keys directly.
BUFFER_PROTOTYPE = default_buffer_prototype()

#: What zarr raises for a metadata document (``zarr.json``) that is cut short or not JSON.
METADATA_ERRORS = (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError)

#: How a group is opened: read, read and write, create or open, create anew, create only.
Mode = Literal["r", "r+", "a", "w", "w-"]

#: Whether :func:`_freeze_for_fork` is registered, and whether it froze the collector now.
_FORKS = {"registered": False, "froze": False}


def _freeze_for_fork() -> None:
    if gc.get_freeze_count() == 0:  # the caller's own gc.freeze() is left as it is
        gc.freeze()
        _FORKS["froze"] = True


def _unfreeze_after_fork() -> None:
    if _FORKS["froze"]:
        _FORKS["froze"] = False
        gc.unfreeze()


def _guard_forks() -> None:
    """Once a store is opened by URL: a process forked from this one (a DataLoader worker)
    never collects what it inherited. The remote filesystems among that, and any dropped ones
    not yet collected, hold connections of this process's event loop: collected in the child,
    where that loop does not run, each would be reported as an "Unclosed client session"
    (``gc.freeze`` around the fork, as Python's documentation suggests for forked workers)."""
    if not _FORKS["registered"] and hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=_freeze_for_fork,
            after_in_parent=_unfreeze_after_fork,
            after_in_child=_unfreeze_after_fork_in_child,
        )
        _FORKS["registered"] = True


def _unfreeze_after_fork_in_child() -> None:
    _FORKS["froze"] = False  # the child keeps what it inherited frozen


def open_group(
    location: str | os.PathLike[str],
    *,
    mode: Mode = "r",
    storage_options: dict[str, Any] | None = None,
    consolidated: bool | None = None,
) -> zarr.Group:
    """Open the group at a local path or an fsspec URL (``s3://bucket/x.zarr``).

    Credentials for URLs come from the usual environment (e.g. ``AWS_ACCESS_KEY_ID``,
    ``AWS_ENDPOINT_URL``) or ``storage_options``; none are stored. ``consolidated=False``
    reads each array's own zarr.json rather than the group's consolidated copy.
    """
    if is_url(location):
        _guard_forks()
        with remote_errors(location):
            return zarr.open_group(
                str(location),
                mode=mode,
                storage_options=remote_options(location, storage_options),
                use_consolidated=consolidated,
            )
    return zarr.open_group(os.fspath(location), mode=mode, use_consolidated=consolidated)


def create_group(location: str, storage_options: dict[str, Any] | None) -> zarr.Group:
    """A new, empty group at ``location`` (its parent folder created for local paths)."""
    if not is_url(location):
        os.makedirs(os.path.dirname(os.path.abspath(location)), exist_ok=True)
    return open_group(location, mode="w", storage_options=storage_options)


def open_store(
    location: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    consolidated: bool | None = None,
) -> tuple[zarr.Group, dict[str, Any]]:
    """Open a crystalgrid store read-only: its group and its ``crystalgrid`` attribute
    (``consolidated`` as in :func:`open_group`).

    Raises:
        NotFoundError: nothing at ``location``.
        IntegrityError: the store's ``zarr.json`` is damaged.
        BadInputError: a group that is not a crystalgrid store.
    """
    try:
        group = open_group(
            location, mode="r", storage_options=storage_options, consolidated=consolidated
        )
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise NotFoundError(f"no dataset at {location}") from exc
    except METADATA_ERRORS as exc:
        raise IntegrityError(
            f"{location}: the store's zarr.json is damaged ({first_line(exc)}); restore it or "
            "build the store again"
        ) from None
    return group, read_meta(group)


def array_at(group: zarr.Group, path: str) -> zarr.Array:
    """The array at ``path`` under ``group``.

    Raises:
        KeyError: nothing there, or a group (as zarr says of a missing array).
    """
    node = group[path]
    if not isinstance(node, zarr.Array):
        raise KeyError(f"{path} is a group, not an array")
    return node


def group_at(group: zarr.Group, path: str) -> zarr.Group:
    """The group at ``path`` under ``group``.

    Raises:
        KeyError: nothing there, or an array.
    """
    node = group[path]
    if not isinstance(node, zarr.Group):
        raise KeyError(f"{path} is an array, not a group")
    return node


def open_array(group: zarr.Group, name: str, location: str) -> zarr.Array:
    """Array ``name`` of a store.

    Raises:
        IntegrityError: its metadata is missing or damaged (one line; ``verify`` lists all).
    """
    try:
        return array_at(group, name)
    except METADATA_ERRORS as exc:
        raise IntegrityError(
            f"{location}: the metadata of {name} is missing or damaged ({first_line(exc)}); "
            "run crystalgrid verify, then restore or rebuild the store"
        ) from None


def read_rows(array: zarr.Array, selection: Any, location: str) -> np.ndarray:
    """``array[selection]``.

    Raises:
        IntegrityError: a chunk does not decode (truncated or corrupted), in one line.
        RemoteStorageError: the remote store failed.
    """
    try:
        return cast(np.ndarray, array[selection])
    except CrystalgridError:
        raise
    except Exception as exc:  # noqa: BLE001 - a codec's failure: any exception type
        raise read_error(exc, array.path, location) from None


def read_error(
    exc: BaseException, path: str, location: str, *, keys: Sequence[str] = ()
) -> RemoteStorageError | IntegrityError:
    """The one-line error for a failed read of array ``path``: a remote-storage failure
    (naming the first of the chunk ``keys`` read, or the array), or a chunk that does not
    decode (:class:`~crystalgrid.errors.IntegrityError`)."""
    reason = remote_reason(exc) if is_url(location) else None
    if reason is not None:
        what = f"{keys[0]}" + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")
        return RemoteStorageError(f"{location}: {reason} (reading {what or path})")
    return IntegrityError(
        f"{location}: a chunk of {path} does not decode ({first_line(exc)}); "
        "run crystalgrid verify, then restore or rebuild the store"
    )


def arrays_under(group: zarr.Group, prefix: str) -> list[str]:
    """Paths (``prefix/...``) of every array under ``group``."""
    out = []
    for name, node in group.members():
        if isinstance(node, zarr.Group):
            out.extend(arrays_under(node, f"{prefix}/{name}"))
        else:
            out.append(f"{prefix}/{name}")
    return out
