"""One serialisation for every configuration dataclass: dicts of JSON types, checked on the way in.

:class:`GridSpec`, :class:`~crystalgrid.filters.FilterConfig`,
:class:`~crystalgrid.builder.BuildConfig` and :class:`~crystalgrid.models.config.TrainConfig`
inherit :class:`Config`: ``to_dict()`` gives every field (nested configs as dicts, tuples as
lists), ``from_dict()`` rebuilds the object (lists back to tuples where the field is a
tuple) and refuses unknown keys. Every problem is a :class:`~crystalgrid.errors.ConfigError`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from functools import cache
from typing import Any, ClassVar, TypeVar, cast

from crystalgrid.errors import ConfigError

__all__ = ["Config"]

C = TypeVar("C", bound="Config")


class Config:
    """Mixin of :meth:`to_dict` / :meth:`from_dict` for a configuration dataclass."""

    #: What the configuration is called in error messages, e.g. ``"grid spec"``.
    config_name: ClassVar[str] = "configuration"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (nested configs as dicts, tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Rebuild from :meth:`to_dict` output; missing keys take their defaults.

        Raises:
            ConfigError: for unknown keys, a value of the wrong kind, or an invalid setting.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a {cls.config_name} must be a mapping, got {type(data).__name__}")
        hints = _field_types(cast(Any, cls))  # a class is hashable; the cache's hints miss it
        unknown = sorted(set(data) - set(hints))
        if unknown:
            raise ConfigError(f"unknown {cls.config_name} keys: {unknown}")
        kwargs = {k: _typed(v, hints[k], cls.config_name, k) for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:  # e.g. a required field missing
            raise ConfigError(f"invalid {cls.config_name}: {exc}") from None


@cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _typed(value: Any, hint: Any, name: str, key: str) -> Any:
    """``value`` as the field's type wants it: nested configs built, lists made tuples."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    for option in options:
        if isinstance(option, type) and issubclass(option, Config):
            if isinstance(value, option):
                return value
            if isinstance(value, Mapping):
                return option.from_dict(value)
            raise ConfigError(f"{name} key {key!r} must be a mapping, got {value!r}")
    if isinstance(value, list) and any(typing.get_origin(o) is tuple for o in options):
        return tuple(value)
    return value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
