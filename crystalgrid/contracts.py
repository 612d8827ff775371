"""What crystalgrid's parts ask of each other: the source and split-view contracts, and checks.

A *view* is one split of a dataset: ``crystalgrid.open_dataset(path).split(name)`` returns
one (:class:`~crystalgrid.dataset.DatasetView`), and any object with the same two methods
can stand in for it (a test double, another project's dataset). Batches are dicts of numpy
arrays with a leading sample axis: ``"density"`` ``(B, n, n, n)`` float32 (Å^-3),
``"species"`` ``(B, n, n, n)`` uint8 (Z), ``"atom_positions"`` (B lists of ``(k, 3)`` box
Å), ``"atom_numbers"``, ``"index"`` (store sample index), ...

A *source* of structures is :class:`crystalgrid.sources.Source` (records, provenance,
fingerprint). :func:`check_view` and :func:`check_source` test an object against its
contract; crystalgrid's tests run them on every view and source it ships and on the test
doubles, and a user can run them on their own.

This module imports neither torch nor zarr.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from crystalgrid.errors import BadInputError

__all__ = ["ViewLike", "check_source", "check_view", "iter_view"]


@runtime_checkable
class ViewLike(Protocol):
    """What the models and scorers need of a dataset split (``fields=`` is optional)."""

    def __len__(self) -> int: ...

    def iter_batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False
    ) -> Iterator[dict[str, Any]]: ...


def iter_view(
    view: ViewLike,
    batch_size: int,
    *,
    fields: Sequence[str] | None = None,
    limit: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> Iterator[dict[str, Any]]:
    """``view.iter_batches``, reading only ``fields`` when the view can skip the rest.

    Args:
        view: the split.
        batch_size: samples per batch (the last one may be shorter unless ``drop_last``).
        fields: the arrays wanted (``None``: the view's default). Views without ``fields=``
            are called without it and yield everything.
        limit: stop after this many samples (the last batch cut short); ``None``: all.
        shuffle, seed, drop_last: as the view's ``iter_batches``.
    """
    kwargs: dict[str, Any] = {"shuffle": shuffle, "seed": seed, "drop_last": drop_last}
    if fields is not None:
        params: Mapping[str, Any]
        try:
            params = inspect.signature(view.iter_batches).parameters
        except (TypeError, ValueError):
            params = {}
        if "fields" in params:
            kwargs["fields"] = tuple(fields)
    seen = 0
    for batch in view.iter_batches(batch_size, **kwargs):
        if limit is not None:
            n = len(next(iter(batch.values())))
            if seen + n > limit:
                batch = {k: v[: limit - seen] for k, v in batch.items()}
                n = limit - seen
            if n <= 0:
                return
            seen += n
        yield batch
        if limit is not None and seen >= limit:
            return


def check_view(view: Any, *, batch_size: int = 3) -> None:
    """Check that ``view`` keeps the split-view contract; raise on the first breach.

    Batches in order cover every sample once; ``density`` is ``(B, n, n, n)`` float32 and
    ``species`` the same shape in uint8; atoms come as one array per sample; ``drop_last``
    drops only a short last batch; the same ``seed`` gives the same shuffled batches.

    Raises:
        BadInputError: naming what the view does differently.
    """
    if not isinstance(view, ViewLike):
        raise BadInputError(f"{type(view).__name__} has no __len__ or iter_batches")
    n = len(view)
    if n < 1:
        raise BadInputError("an empty view cannot be checked")
    sizes = []
    for batch in view.iter_batches(batch_size, shuffle=False):
        density, species = np.asarray(batch["density"]), np.asarray(batch["species"])
        b = len(density)
        if density.dtype != np.float32 or density.ndim != 4 or len(set(density.shape[1:])) != 1:
            raise BadInputError(
                f"density must be (B, n, n, n) float32, got {density.shape} {density.dtype}"
            )
        if species.dtype != np.uint8 or species.shape != density.shape:
            raise BadInputError(
                f"species must be uint8 of the density's shape, got {species.shape} {species.dtype}"
            )
        for key in ("atom_positions", "atom_numbers"):
            if key in batch and len(batch[key]) != b:
                raise BadInputError(f"{key} must hold one array per sample")
        sizes.append(b)
    if sum(sizes) != n or any(s != batch_size for s in sizes[:-1]):
        raise BadInputError(f"batches of {batch_size} cover {sizes} samples, not {n} once")
    kept = [len(b["density"]) for b in view.iter_batches(batch_size, drop_last=True)]
    if sum(kept) != (n // batch_size) * batch_size:
        raise BadInputError("drop_last must drop only the short last batch")

    def shuffled(seed: int) -> list[np.ndarray]:
        batches = view.iter_batches(batch_size, shuffle=True, seed=seed)
        return [np.asarray(b["density"]) for b in itertools.islice(batches, 4)]

    first, again = shuffled(7), shuffled(7)
    same = len(first) == len(again) and all(
        np.array_equal(a, b) for a, b in zip(first, again, strict=True)
    )
    if not same:
        raise BadInputError("the same seed must give the same shuffled batches")


def check_source(source: Any, *, limit: int = 50) -> None:
    """Check that ``source`` keeps the source contract on its first ``limit`` records.

    ``records()`` yields :class:`~crystalgrid.sources.RawRecord` or
    :class:`~crystalgrid.sources.Rejected` and gives the same records in the same order on a
    second call; ``provenance()`` is a dict with ``kind`` and ``location``; ``fingerprint()``
    is a stable hex digest.

    Raises:
        BadInputError: naming what the source does differently.
    """
    from crystalgrid.sources.base import RawRecord, Rejected

    def listing() -> list[tuple[str, str]]:
        out = []
        for record in itertools.islice(source.records(), limit):
            if not isinstance(record, RawRecord | Rejected):
                raise BadInputError(f"records() yielded a {type(record).__name__}")
            out.append((type(record).__name__, record.material_id))
        return out

    if listing() != listing():
        raise BadInputError("records() must give the same records in the same order")
    provenance = source.provenance()
    if not isinstance(provenance, dict) or not {"kind", "location"} <= set(provenance):
        raise BadInputError("provenance() must be a dict with kind and location")
    digest = source.fingerprint()
    if not (isinstance(digest, str) and re.fullmatch("[0-9a-f]{16,}", digest)):
        raise BadInputError(f"fingerprint() must be a hex digest, got {digest!r}")
    if source.fingerprint() != digest:
        raise BadInputError("fingerprint() must not change between calls")
