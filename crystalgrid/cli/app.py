"""The click group every verb registers on, and the one-line error convention."""

from __future__ import annotations

import functools
import re
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
            click.echo(f"crystalgrid: error: {with_flags(str(exc))}", err=True)
            if isinstance(exc, RemoteStorageError):
                _drop_abandoned_requests()
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def with_flags(message: str) -> str:
    """The library's message in the command line's terms: an argument the running verb takes
    as an option, named where the message opens with it (``"max_sites must be at least 1"``),
    becomes its flag (``"--max-sites must be at least 1"``)."""
    context = click.get_current_context(silent=True)
    if context is None:
        return message
    for param in context.command.params:
        flags = [o for o in param.opts if o.startswith("--")]
        if isinstance(param, click.Option) and param.name and flags:
            pattern = rf"(^|; |\()({re.escape(param.name)})(?= must| is empty|: )"
            message = re.sub(pattern, rf"\g<1>{flags[0]}", message)
    return message


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
