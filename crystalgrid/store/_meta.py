"""The store's ``crystalgrid`` attribute: :class:`StoreMeta` reads and writes it.

The attribute is written in three stages: ``creating`` (what the build was asked, before the
crystals are scanned), ``gridding`` (counts, splits and rejects, once the crystal table is
written) and ``complete`` (``n_atoms`` and ``completed``). Keys that a stage has not reached,
or that an older store never had, stay absent when it is written again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import zarr

from crystalgrid.errors import BadInputError, IntegrityError
from crystalgrid.splits import SPLITS
from crystalgrid.store._schema import ATTR, FORMAT, LEGACY_CHECKSUM, LEGACY_DENSITY_METHOD

__all__ = ["StoreMeta", "is_store_attrs", "read_meta", "split_ranges"]

#: Keys a store has once its crystals are scanned, and once it is complete.
_GRIDDING = (
    "n_crystals",
    "n_samples",
    "n_blocks",
    "block_crystals",
    "splits",
    "rejects",
    "properties",
)
_COMPLETE = ("n_atoms", "completed")
#: Fields of :class:`StoreMeta` that are not keys of the attribute.
_OWN = ("absent", "extra")


def is_store_attrs(value: Any) -> bool:
    """Whether ``value`` (a group's ``crystalgrid`` attribute) is one of this format."""
    return isinstance(value, dict) and value.get("format") == FORMAT


def read_meta(group: zarr.Group) -> dict[str, Any]:
    """The ``crystalgrid`` attribute of a store, as stored (JSON types).

    Raises:
        BadInputError: when the group is not a crystalgrid store.
    """
    meta = group.attrs.get(ATTR)
    if not is_store_attrs(meta):
        raise BadInputError(f"{group.store_path} is not a crystalgrid dataset ({FORMAT})")
    return dict(meta)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class StoreMeta:
    """The ``crystalgrid`` attribute of a store, typed (docs/store-format.md, "Attributes").

    The one reader and writer of the attribute: :meth:`read` and :meth:`from_attrs` type it,
    :meth:`write` stores it; :meth:`new`, :meth:`gridding` and :meth:`completed_at` are the
    build's three stages. Fields are in the order the attribute stores its keys. Counts are
    ``None`` until known.
    """

    format: str
    state: str
    crystalgrid_version: str
    created: str
    fingerprint: str
    representation: str
    grid: dict[str, Any]
    seed: int
    samples_per_crystal: int
    rotate: bool | None
    split_fractions: tuple[float, ...]
    config: dict[str, Any]
    source: dict[str, Any]
    source_fingerprint: str
    #: The digest of ``checksums/`` (absent from stores that predate it: BLAKE2b-64).
    checksum: str = LEGACY_CHECKSUM
    #: How the density was evaluated (absent from stores that predate it: matrix products of the
    #: full factors); see :data:`crystalgrid.grids.numpy_backend.DENSITY_METHOD`.
    density_method: str = LEGACY_DENSITY_METHOD
    licence: str | None
    citation: str | None
    #: How crystals were split: ``random``, ``composition``, ``chemsys``, ``source`` or
    #: ``file`` (absent from stores that predate it: ``random``).
    split_by: str = "random"
    #: With ``split_by == "file"``: ``{"sha256": hex, "ids": count}`` of the split file.
    split_file: dict[str, Any] | None = None
    n_crystals: int | None = None
    n_samples: int | None = None
    n_blocks: int | None = None
    block_crystals: int | None = None
    #: ``{split: {"crystals": [start, stop], "samples": [start, stop]}}``.
    splits: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    #: Rejected structures by reason.
    rejects: dict[str, int] = field(default_factory=dict)
    #: Names under ``crystals/properties/``.
    properties: tuple[str, ...] = ()
    n_atoms: int | None = None
    completed: str | None = None
    #: Keys the stored attribute does not have: left out when it is written again.
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    #: Keys this crystalgrid does not know (a newer writer's), written back as they were.
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The attribute's keys, in the order it stores them."""
        return tuple(f.name for f in fields(cls) if f.name not in _OWN)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StoreMeta:
        """Type the stored attribute (unknown keys are kept in :attr:`extra`).

        Raises:
            IntegrityError: when a key every store has is missing.
        """
        names = cls.keys()
        values = {k: v for k, v in attrs.items() if k in names}
        values["split_fractions"] = tuple(values.get("split_fractions", ()))
        values["properties"] = tuple(values.get("properties", ()))
        absent = frozenset(k for k in names if k not in attrs)
        extra = {k: v for k, v in attrs.items() if k not in names}
        try:
            return cls(**values, absent=absent, extra=extra)
        except TypeError as exc:
            raise IntegrityError(f"the store's attributes are incomplete: {exc}") from None

    @classmethod
    def read(cls, group: zarr.Group) -> StoreMeta:
        """The attribute of the store at ``group``, typed.

        Raises:
            BadInputError: not a crystalgrid store.
            IntegrityError: its attributes are incomplete.
        """
        return cls.from_attrs(read_meta(group))

    @classmethod
    def new(cls, **values: Any) -> StoreMeta:
        """The attribute of a store being created (state ``creating``): what the build was
        asked; ``split_file`` only when it is given."""
        later = {*_GRIDDING, *_COMPLETE} | ({"split_file"} if "split_file" not in values else set())
        return cls(format=FORMAT, state="creating", **values, absent=frozenset(later))

    def updated(self, **changes: Any) -> StoreMeta:
        """A copy with ``changes`` (keys that were absent are written from now on)."""
        return replace(self, **changes, absent=self.absent - changes.keys())

    def gridding(
        self,
        *,
        n_crystals: int,
        n_samples: int,
        n_blocks: int,
        block_crystals: int,
        splits: dict[str, dict[str, list[int]]],
        rejects: dict[str, int],
        properties: tuple[str, ...],
    ) -> StoreMeta:
        """The attribute once the crystal table is written (state ``gridding``)."""
        return self.updated(
            state="gridding",
            n_crystals=n_crystals,
            n_samples=n_samples,
            n_blocks=n_blocks,
            block_crystals=block_crystals,
            splits=splits,
            rejects=rejects,
            properties=tuple(properties),
        )

    def completed_at(self, completed: str, *, n_atoms: int) -> StoreMeta:
        """The attribute of the finished store (state ``complete``; ``completed``: ISO 8601)."""
        return self.updated(state="complete", n_atoms=n_atoms, completed=completed)

    def to_attrs(self) -> dict[str, Any]:
        """The attribute as stored: JSON types, keys in order, absent keys left out."""
        out: dict[str, Any] = {}
        for name in self.keys():
            if name in self.absent:
                continue
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        out.update(self.extra)
        return out

    def write(self, group: zarr.Group) -> None:
        """Store the attribute in ``group``."""
        group.attrs[ATTR] = self.to_attrs()

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    def split_range(self, name: str, unit: str = "samples") -> tuple[int, int]:
        """``(start, stop)`` of a split in ``"samples"`` or ``"crystals"``."""
        start, stop = self.splits[name][unit]
        return int(start), int(stop)

    def block_size(self, block: int) -> int:
        """The crystals of build block ``block``."""
        if self.block_crystals is None or self.n_crystals is None:
            raise BadInputError(f"a store in state {self.state} has no blocks yet")
        first = block * self.block_crystals
        return max(0, min(self.block_crystals, self.n_crystals - first))


def split_ranges(
    counts: Mapping[str, int], samples_per_crystal: int
) -> dict[str, dict[str, list[int]]]:
    """Each split's range of crystals and of samples, the splits stored one after the other
    in :data:`~crystalgrid.splits.SPLITS` order (``counts``: crystals per split)."""
    ranges, start = {}, 0
    for name in SPLITS:
        stop = start + counts[name]
        ranges[name] = {
            "crystals": [start, stop],
            "samples": [start * samples_per_crystal, stop * samples_per_crystal],
        }
        start = stop
    return ranges
