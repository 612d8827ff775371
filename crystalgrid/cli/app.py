"""The click group every verb registers on, and the one-line error convention."""

from __future__ import annotations

import functools
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click

from crystalgrid._version import __version__
from crystalgrid.errors import CrystalgridError, CrystalgridWarning, RemoteStorageError

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["main", "user_errors"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crystalgrid")
def main() -> None:
    """Crystal structures to voxel-grid datasets, and the reference models that use them."""


def user_errors(func: F) -> F:
    """Report a :class:`CrystalgridError` as ``crystalgrid: error: ...`` and exit 2, and a
    :class:`CrystalgridWarning` as one line ``crystalgrid: warning: ...`` (the work goes on)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                default_show = warnings.showwarning

                def show(message: Any, category: type[Warning], *rest: Any, **kw: Any) -> None:
                    if issubclass(category, CrystalgridWarning):
                        click.echo(f"crystalgrid: warning: {message}", err=True)
                    else:
                        default_show(message, category, *rest, **kw)

                warnings.showwarning = show
                return func(*args, **kwargs)
        except CrystalgridError as exc:
            click.echo(f"crystalgrid: error: {exc}", err=True)
            if isinstance(exc, RemoteStorageError):
                _drop_abandoned_requests()
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _drop_abandoned_requests() -> None:
    """After a remote-storage error, zarr's event loop still holds the requests it had
    started; closing them at exit makes botocore complain about its context variables
    ("Exception ignored in: <coroutine ...>"), once per request. The error is already
    printed in one line, so those coroutine closings are not reported; anything else is."""
    default = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.object, types.CoroutineType):
            return
        default(unraisable)

    sys.unraisablehook = hook
