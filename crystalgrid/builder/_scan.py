"""The scan: parse and filter every record on the cluster, in the source's order, then split.

Each task parses and filters a shard of records (:func:`_scan_shard`, run on a worker) and
returns a typed row per record; the driver merges the shards in order, drops repeated ids,
and assigns the splits (:func:`split_scan`).
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from crystalgrid.build_timings import BuildTimings
from crystalgrid.builder._cluster import n_workers, progress
from crystalgrid.builder._config import BuildConfig
from crystalgrid.errors import BadInputError, CrystalgridError, RejectedStructure
from crystalgrid.filters import FilterConfig
from crystalgrid.grids.placement import Crystal
from crystalgrid.sources import RawRecord, Rejected, Source, parse_record
from crystalgrid.splits import assign
from crystalgrid.store import UNEXPECTED_ERROR

__all__ = [
    "SCAN_SHARD",
    "UNEXPECTED_ERROR",
    "ScanReject",
    "ScanResult",
    "ScanRow",
    "_scan_shard",
    "scan_source",
    "split_scan",
]

SCAN_SHARD = 64  # records per scan task


class ScanRow(NamedTuple):
    """A record the scan kept: a crystal as the store keeps it (``kind`` tells the two rows
    of :func:`_scan_shard` apart)."""

    kind: Literal["ok"]
    material_id: str
    #: (3, 3) float64: rows are lattice vectors, Å.
    lattice: np.ndarray
    #: (sites, 3) float64: fractional coordinates.
    frac: np.ndarray
    #: (sites,) atomic numbers.
    numbers: np.ndarray
    #: The record's finite numeric properties.
    properties: dict[str, float]
    #: The source's split of the record, if it gives one.
    split: str | None


class ScanReject(NamedTuple):
    """A record the scan left out, with its reason."""

    kind: Literal["reject"]
    material_id: str
    reason: str
    detail: str


@dataclass
class ScanResult:
    """Kept crystals in source order, and the rejects."""

    crystals: list[ScanRow] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)
    times: BuildTimings = field(default_factory=BuildTimings)

    @property
    def material_ids(self) -> list[str]:
        return [c.material_id for c in self.crystals]


def _scan_shard(
    records: list[RawRecord], filters: dict[str, Any]
) -> tuple[list[ScanRow | ScanReject], BuildTimings]:
    """Parse and filter records (runs on a worker): one row per record, in order, and the
    seconds spent parsing and filtering."""
    config = FilterConfig.from_dict(filters)
    times = BuildTimings()
    out: list[ScanRow | ScanReject] = []
    for record in records:
        try:
            with times.stage("parse"):
                structure = parse_record(record)
            with times.stage("filter"):
                config.check(structure)
                crystal = Crystal.from_structure(structure)
        except RejectedStructure as exc:
            out.append(ScanReject("reject", record.material_id, exc.reason, exc.detail))
            continue
        except Exception as exc:  # noqa: BLE001 - counted; too many stop the build (UNEXPECTED_ERROR)
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
            detail = f"{record.origin}: {detail} (raised at {_raised_at(exc)})"
            out.append(ScanReject("reject", record.material_id, UNEXPECTED_ERROR, detail))
            continue
        props = {
            k: float(v)
            for k, v in record.properties.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        out.append(
            ScanRow(
                "ok",
                record.material_id,
                crystal.lattice,
                crystal.frac,
                crystal.numbers,
                props,
                record.split,
            )
        )
    return out, times


def _raised_at(exc: BaseException) -> str:
    """``"pymatgen/core/structure.py:123 in from_sites"``: the innermost frame of ``exc``'s
    traceback, its file relative to the ``sys.path`` entry it was imported from."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    frame = frames[-1]
    path = os.path.abspath(frame.filename)
    roots = [os.path.abspath(p) + os.sep for p in sys.path if p]
    root = max((r for r in roots if path.startswith(r)), key=len, default="")
    return f"{path[len(root) :]}:{frame.lineno} in {frame.name}"


def _scan_part(
    part: Any, filters: dict[str, Any]
) -> tuple[list[ScanRow | ScanReject], BuildTimings, list[Rejected]]:
    """Read one part of a source (runs on a worker: the driver never holds its records),
    then parse and filter it as :func:`_scan_shard` does; the part's listing rejects are
    returned apart (the merge puts them before the part's rows, as for a listed shard)."""
    records: list[RawRecord] = []
    early: list[Rejected] = []
    for item in part.records():
        (early if isinstance(item, Rejected) else records).append(item)
    rows, times = _scan_shard(records, filters)
    return rows, times, early


def _shards(source: Source) -> Iterator[tuple[list[RawRecord], list[Rejected]]]:
    shard: list[RawRecord] = []
    early: list[Rejected] = []
    for item in source.records():
        if isinstance(item, Rejected):
            early.append(item)
            continue
        shard.append(item)
        if len(shard) == SCAN_SHARD:
            yield shard, early
            shard, early = [], []
    if shard or early:
        yield shard, early


def _scan(
    source: Source, config: BuildConfig, client: Any, bar: Any, *, parts: bool = False
) -> ScanResult:
    """Parse and filter every record on the cluster, keeping the source's order (``bar``:
    the progress bar, in records)."""
    from distributed import as_completed

    result = ScanResult()
    seen: set[str] = set()
    filters = config.filters.to_dict()
    window = 4 * max(1, n_workers(client))
    pending: dict[str, tuple[int, list[Rejected]]] = {}  # future key -> (shard index, early)
    done: dict[int, tuple[list[ScanRow | ScanReject], list[Rejected]]] = {}
    next_to_merge = 0
    running = as_completed()

    def merge_ready() -> None:
        nonlocal next_to_merge
        while next_to_merge in done:
            rows, early = done.pop(next_to_merge)
            result.rejects.extend(early)
            for row in rows:
                if isinstance(row, ScanReject):
                    result.rejects.append(Rejected(row.material_id, row.reason, row.detail))
                elif row.material_id in seen:
                    result.rejects.append(
                        Rejected(row.material_id, "duplicate_id", "an earlier record has this id")
                    )
                else:
                    seen.add(row.material_id)
                    result.crystals.append(row)
            bar.update(len(rows) + len(early))
            next_to_merge += 1

    def collect(future: Any) -> None:
        index, early = pending.pop(future.key)
        rows, times, *read_on_worker = future.result()
        result.times.add(times)
        done[index] = (rows, early + (read_on_worker[0] if read_on_worker else []))
        merge_ready()

    partitions = getattr(source, "partitions", None) if parts else None
    tasks: Iterator[tuple[Any, list[Rejected]]]
    if callable(partitions):  # parts read on the workers (Parquet row groups)
        tasks = (
            (client.submit(_scan_part, part, filters, pure=False), []) for part in partitions()
        )
    else:  # records listed here, in shards of SCAN_SHARD
        tasks = (
            (client.submit(_scan_shard, shard, filters, pure=False), early)
            for shard, early in _shards(source)
        )
    for index, (future, early) in enumerate(tasks):
        pending[future.key] = (index, early)
        running.add(future)
        while running.count() >= window:
            collect(next(running))
    for future in running:
        collect(future)
    return result


def split_scan(scan: ScanResult, config: BuildConfig, table: dict[str, str] | None) -> np.ndarray:
    """The split code of every kept crystal; crystals a split file does not list are moved
    to the rejects (``not_in_splits``).

    Raises:
        ConfigError: ``config.split_by`` is ``"source"`` and the source does not give every
            crystal's split.
        BadInputError: the split file lists none of the crystals.
    """
    split, keep = assign(
        scan.material_ids,
        [c.numbers for c in scan.crystals],
        [c.split for c in scan.crystals],
        method=config.split_by,
        seed=config.seed,
        fractions=config.split_fractions,
        table=table,
    )
    if keep.all():
        return split
    for i in np.flatnonzero(~keep):
        scan.rejects.append(
            Rejected(scan.crystals[i].material_id, "not_in_splits", "the split file omits it")
        )
    kept = np.flatnonzero(keep).tolist()
    scan.crystals = [scan.crystals[i] for i in kept]
    if not kept:
        raise BadInputError("the split file lists none of the source's structures")
    return split[keep]


def scan_source(
    source: Source,
    config: BuildConfig,
    client: Any,
    *,
    quiet: bool,
    max_error_share: float,
    workers_see_source: bool = False,
) -> ScanResult:
    """Scan every record of ``source`` on ``client``'s cluster (a progress bar unless
    ``quiet``). With ``workers_see_source`` (the build's own local workers) a source that
    offers ``partitions()`` is read part by part on the workers; otherwise the driver lists
    the records and the workers only parse them (a remote cluster never reads the source).

    Raises:
        CrystalgridError: more unexpected errors than ``max_error_share`` allows.
        BadInputError: no usable structure at all.
    """
    with progress(None, "scan", quiet) as bar:
        scan = _scan(source, config, client, bar, parts=workers_see_source)
    _check_errors(scan, source.name, max_error_share)
    if not scan.crystals:
        reasons = Counter(r.reason for r in scan.rejects)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "it is empty"
        raise BadInputError(f"no usable structure in {source.name}: {detail}")
    return scan


def _check_errors(scan: ScanResult, name: str, max_error_share: float) -> None:
    """Stop a build whose records failed with unexpected errors (:data:`UNEXPECTED_ERROR`) in
    more than ``max_error_share`` of the source, before anything is written.

    Raises:
        CrystalgridError: one line with the count and the first error, its type, message and
            where it was raised.
    """
    errors = [r for r in scan.rejects if r.reason == UNEXPECTED_ERROR]
    total = len(scan.crystals) + len(scan.rejects)
    if not errors or len(errors) <= max_error_share * total:
        return
    material_id, detail = errors[0].material_id, errors[0].detail
    raise CrystalgridError(
        f"{name}: {len(errors)} of {total} records ({len(errors) / total:.1%}) failed with an "
        f"unexpected error, more than --max-error-share {max_error_share:g} allows; the first, "
        f"{material_id}: {detail}. This is a bug of crystalgrid or of a library it uses (numpy, "
        "pymatgen), not of the input; nothing was written"
    )
