"""The driver: build (or resume) the stores of one source, phase by phase."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import zarr

from crystalgrid._version import __version__
from crystalgrid.build_timings import BuildTimings
from crystalgrid.builder._block import _grid_block
from crystalgrid.builder._cluster import dask_client, progress, resolve_workers
from crystalgrid.builder._config import MAX_ERROR_SHARE, BuildConfig, build_fingerprint
from crystalgrid.builder._scan import UNEXPECTED_ERROR, ScanResult, scan_source, split_scan
from crystalgrid.errors import BadInputError, ConfigError, CrystalgridError
from crystalgrid.grids.numpy_backend import DENSITY_METHOD
from crystalgrid.jsonio import utc_now
from crystalgrid.lock import HeldLock, store_lock
from crystalgrid.remote import is_url, remote_errors
from crystalgrid.sources import Source, open_source
from crystalgrid.splits import SPLITS, read_split_file, resolve, split_file_digest
from crystalgrid.store import (
    CHECKSUM,
    StoreMeta,
    blocks_done,
    compressor,
    create_group,
    create_store,
    finalize,
    open_group,
)

__all__ = ["BuildReport", "build", "build_representations", "default_out"]


@dataclass
class BuildReport:
    """What a build did."""

    location: str
    representation: str
    n_crystals: int
    n_samples: int
    rejects: dict[str, int]
    splits: dict[str, int]
    blocks_total: int
    blocks_computed: int
    resumed: bool
    seconds: float
    #: Seconds per stage (:mod:`crystalgrid.build_timings`); the scan and the cluster's start-up
    #: are counted in the first store of a multi-representation build.
    timings: BuildTimings = field(default_factory=BuildTimings)

    def summary(self) -> str:
        """One paragraph for the terminal."""
        inputs = {k: v for k, v in self.rejects.items() if k != UNEXPECTED_ERROR}
        reasons = ", ".join(f"{k} {v}" for k, v in inputs.items()) or "none"
        errors = self.rejects.get(UNEXPECTED_ERROR, 0)
        failed = (
            f"; {errors} left out by an unexpected error (crystalgrid info names the first)"
            if errors
            else ""
        )
        how = "resumed, " if self.resumed else ""
        return (
            f"{self.location}: {self.n_samples} {self.representation} samples of "
            f"{self.n_crystals} crystals (train {self.splits.get('train', 0)}, "
            f"val {self.splits.get('val', 0)}, test {self.splits.get('test', 0)} crystals); "
            f"{sum(inputs.values())} rejected ({reasons}){failed}; "
            f"{how}{self.blocks_computed}/{self.blocks_total} blocks computed in "
            f"{self.seconds:.1f} s"
        )


def default_out(representation: str) -> str:
    """``./crystalgrid-data/<representation>.zarr``."""
    return os.path.join("crystalgrid-data", f"{representation}.zarr")


def _split_table(
    splits: str | os.PathLike[str] | Mapping[str, str] | None,
) -> dict[str, str] | None:
    """``{id: split}`` from a split file or a mapping (checked), or None."""
    if splits is None:
        return None
    if not isinstance(splits, Mapping):
        return read_split_file(splits)
    bad = {v for v in splits.values()} - set(SPLITS)
    if bad:
        raise ConfigError(f"splits must map ids to {', '.join(SPLITS)}, got {sorted(bad)}")
    return dict(splits)


def build(
    source: Source | str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    config: BuildConfig | None = None,
    workers: int | str = 1,
    scheduler: str | None = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    splits: str | os.PathLike[str] | Mapping[str, str] | None = None,
    max_error_share: float = MAX_ERROR_SHARE,
) -> BuildReport:
    """Build (or resume) the dataset of one representation.

    Args:
        source: a :class:`~crystalgrid.sources.Source`, a path or URL (collection, CIF
            folder, CSV, JSON), or None for the embedded demo collection.
        out: store path or URL; ``./crystalgrid-data/<repr>.zarr`` by default.
        config: what to build (representation, samples, seed, ...).
        workers: local worker processes, or ``"auto"`` (:func:`resolve_workers`: the cores
            available, at most 8); 1 runs in this process (ignored with ``scheduler``).
        scheduler: address of a running ``dask.distributed`` scheduler.
        storage_options: fsspec options for URL outputs (credentials stay in the environment).
        overwrite: replace a store built from another configuration or source.
        quiet: no progress bars.
        splits: a split file (``crystalgrid splits STORE --out FILE``) or ``{id: split}``:
            every crystal takes the split listed; crystals not listed are left out
            (rejects, reason ``not_in_splits``). Otherwise ``config.split_by`` decides.

    Raises:
        NotFoundError: a source that does not exist.
        BadInputError: no usable structure, a split file that lists none of them, or a
            store at ``out`` that is not a crystalgrid store or was built from a different
            configuration or source (without ``overwrite``).
        ConfigError: an invalid argument (``workers``, ``max_error_share``, ``splits``).
        LockedError: another build is writing the store (:mod:`crystalgrid.lock`).
        CrystalgridError: more unexpected errors than ``max_error_share`` allows (before
            anything is written), a full disk, or workers killed. A remote store or source
            that fails is a :class:`~crystalgrid.errors.RemoteStorageError`.
    """
    config = config or BuildConfig()
    return build_representations(
        source,
        {config.representation: out},
        config=config,
        workers=workers,
        scheduler=scheduler,
        storage_options=storage_options,
        overwrite=overwrite,
        quiet=quiet,
        splits=splits,
        max_error_share=max_error_share,
    )[0]


def build_representations(
    source: Source | str | os.PathLike[str] | None,
    outs: Mapping[str, str | os.PathLike[str] | None],
    *,
    config: BuildConfig | None = None,
    workers: int | str = 1,
    scheduler: str | None = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    splits: str | os.PathLike[str] | Mapping[str, str] | None = None,
    max_error_share: float = MAX_ERROR_SHARE,
) -> list[BuildReport]:
    """Build several representations of one source (``{"single": out, "repeated": out}``).

    One Dask cluster serves them all and the source is parsed and filtered once: the stores
    share their crystals and splits. ``config.representation`` is replaced per store; the
    other arguments are those of :func:`build`.
    """
    started = time.perf_counter()
    config = config or BuildConfig()
    workers = resolve_workers(workers)
    if not 0 <= max_error_share <= 1:
        raise ConfigError(f"max_error_share must be in 0..1, got {max_error_share:g}")
    table = _split_table(splits)
    locations = {
        r: os.fspath(out) if out is not None else default_out(r) for r, out in outs.items()
    }
    named = source if isinstance(source, str | os.PathLike) else None
    with remote_errors(*locations.values(), named), contextlib.ExitStack() as locks:
        if not hasattr(source, "records"):
            source = open_source(source)  # type: ignore[arg-type]
        source_fingerprint = source.fingerprint()  # type: ignore[union-attr]
        held = {  # one writer per store
            location: locks.enter_context(store_lock(location, storage_options))
            for location in locations.values()
        }
        locks.enter_context(_disk_errors(locations.values()))
        return _build_locked(
            source,  # type: ignore[arg-type]
            locations,
            source_fingerprint,
            config=config,
            workers=workers,
            scheduler=scheduler,
            storage_options=storage_options,
            overwrite=overwrite,
            quiet=quiet,
            started=started,
            table=table,
            held=held,
            max_error_share=max_error_share,
        )


#: Write failures a build can resume from once the disk is sorted out.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)


@contextlib.contextmanager
def _disk_errors(locations: Iterable[str]) -> Iterator[None]:
    """A full (or read-only, or failing) disk as a one-line error: what happened, that the
    finished blocks are kept, and how to resume."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        where = " or ".join(locations)
        raise CrystalgridError(
            f"{where}: {os.strerror(exc.errno)} while writing the store; finished blocks are "
            "kept: free space (or fix the disk), then run the same command to resume"
        ) from None


@dataclass
class _Target:
    """One store of a build: what to build there, and what is there already (``group`` and
    ``meta`` None: nothing to resume)."""

    config: BuildConfig
    location: str
    fingerprint: str
    group: zarr.Group | None
    meta: StoreMeta | None


@dataclass
class _Scanned:
    """The scanned source and its split codes, shared by the stores of a build."""

    scan: ScanResult
    split: np.ndarray


def _build_locked(
    source: Source,
    locations: dict[str, str],
    source_fingerprint: str,
    *,
    config: BuildConfig,
    workers: int,
    scheduler: str | None,
    storage_options: dict[str, Any] | None,
    overwrite: bool,
    quiet: bool,
    started: float,
    table: dict[str, str] | None,
    held: dict[str, HeldLock],
    max_error_share: float,
) -> list[BuildReport]:
    """Build the stores, their locks held: scan once, then for each store create (or
    resume), grid the blocks not done, and finalize."""
    targets = []
    for representation, location in locations.items():
        cfg = replace(config, representation=representation)  # type: ignore[arg-type]
        fingerprint = build_fingerprint(cfg, source_fingerprint, table)
        group, meta = _existing(location, storage_options, fingerprint, overwrite)
        targets.append(_Target(cfg, location, fingerprint, group, meta))
    done = [t.meta for t in targets if t.meta is not None and t.meta.complete]
    if len(done) == len(targets):
        return [
            _report(t.location, m, [], True, started) for t, m in zip(targets, done, strict=True)
        ]

    reports: list[BuildReport] = []
    scanned: _Scanned | None = None
    opened = time.perf_counter()
    with dask_client(workers, scheduler) as client:
        startup = time.perf_counter() - opened
        for target in targets:
            started_one = time.perf_counter()
            times = BuildTimings(startup=startup) if not reports else BuildTimings()
            group, meta, location = target.group, target.meta, target.location
            resumed = meta is not None
            if meta is not None and meta.complete:
                reports.append(_report(location, meta, [], resumed, started_one))
                continue
            if group is None or meta is None:
                if scanned is None:
                    with times.stage("scan"):
                        scan = scan_source(
                            source,
                            target.config,
                            client,
                            quiet=quiet,
                            max_error_share=max_error_share,
                            workers_see_source=scheduler is None,
                        )
                        scanned = _Scanned(scan, split_scan(scan, target.config, table))
                    times.add(scan.times)
                with times.stage("create"):
                    held[location].check(read=True)  # never clear a store another build took
                    base = _base_meta(source, target, source_fingerprint, scanned.scan, table)
                    group, meta = _create(target, base, scanned, storage_options)
            with times.stage("gridding"):
                todo = _grid_blocks(
                    group,
                    meta,
                    target=target,
                    storage_options=storage_options,
                    client=client,
                    quiet=quiet,
                    times=times,
                    held=held[location],
                )
            held[location].check(read=True)
            with times.stage("finalize"), zarr.config.set({"array.write_empty_chunks": True}):
                meta = finalize(group, meta, completed=utc_now())
            report = _report(location, meta, todo, resumed, started_one)
            report.timings = times
            reports.append(report)
    return reports


def _create(
    target: _Target,
    base: StoreMeta,
    scanned: _Scanned,
    storage_options: dict[str, Any] | None,
) -> tuple[zarr.Group, StoreMeta]:
    """A new store at the target: its attribute (``base``), tables and empty arrays."""
    config = target.config
    group = create_group(target.location, storage_options)
    base.write(group)
    meta = create_store(
        group,
        base,
        crystals=scanned.scan.crystals,
        split=scanned.split,
        rejects=scanned.scan.rejects,
        block_crystals=config.block_crystals,
        chunk_samples=config.chunk_samples,
        dtype=config.dtype,
        density_compressor=compressor(config.codec, config.compression_level),
    )
    return group, meta


def _base_meta(
    source: Source,
    target: _Target,
    source_fingerprint: str,
    scan: ScanResult,
    table: dict[str, str] | None,
) -> StoreMeta:
    """The attribute of a new store (state ``creating``)."""
    config = target.config
    provenance = source.provenance()
    split_file = {"sha256": split_file_digest(table), "ids": len(table)} if table else None
    return StoreMeta.new(
        crystalgrid_version=__version__,
        created=utc_now(),
        fingerprint=target.fingerprint,
        representation=config.representation,
        grid=config.spec.to_dict(),
        seed=config.seed,
        samples_per_crystal=config.samples_per_crystal,
        rotate=config.rotate,
        split_fractions=config.split_fractions,
        config=config.to_dict(),
        source=provenance,
        source_fingerprint=source_fingerprint,
        checksum=CHECKSUM,
        density_method=DENSITY_METHOD,
        licence=provenance.get("licence"),
        citation=provenance.get("citation"),
        split_by="file" if table else resolve(config.split_by, [c.split for c in scan.crystals]),
        **({"split_file": split_file} if split_file else {}),
    )


def _grid_blocks(
    group: zarr.Group,
    meta: StoreMeta,
    *,
    target: _Target,
    storage_options: dict[str, Any] | None,
    client: Any,
    quiet: bool,
    times: BuildTimings,
    held: HeldLock,
) -> list[int]:
    """Submit every block not marked done; return the blocks computed (their stage times
    are added to ``times``). Each block checks ``held``'s lock before it writes, and the
    driver after each block: a build whose lock was lost stops."""
    config, location = target.config, target.location
    done = blocks_done(group)
    todo = [b for b in range(meta.n_blocks or 0) if not done[b]]
    total = meta.n_crystals or 0
    with progress(total, f"grid {config.representation}", quiet) as bar:
        bar.update(total - sum(meta.block_size(b) for b in todo))
        if todo:
            from distributed import as_completed

            # Workers may run elsewhere, in another working directory: give them an
            # absolute path (they must see the same file system, or use a URL).
            where = location if is_url(location) else os.path.abspath(location)
            futures = [
                client.submit(
                    _grid_block,
                    where,
                    storage_options,
                    b,
                    config.to_dict(),
                    guard=held.guard,
                    pure=False,
                )
                for b in todo
            ]
            from distributed import KilledWorker

            for future in as_completed(futures):
                try:
                    crystals, block_times = future.result()
                except KilledWorker as exc:
                    raise CrystalgridError(
                        f"a block of {location} killed the Dask workers that ran it ({exc}); "
                        "finished blocks are kept: give workers more memory, then run the "
                        "same command to resume"
                    ) from exc
                held.check()
                bar.update(crystals)
                times.add(block_times)
    return todo


def _report(
    location: str, meta: StoreMeta, todo: list[int], resumed: bool, started: float
) -> BuildReport:
    return BuildReport(
        location=location,
        representation=meta.representation,
        n_crystals=meta.n_crystals or 0,
        n_samples=meta.n_samples or 0,
        rejects=meta.rejects,
        splits={k: v["crystals"][1] - v["crystals"][0] for k, v in meta.splits.items()},
        blocks_total=meta.n_blocks or 0,
        blocks_computed=len(todo),
        resumed=resumed,
        seconds=time.perf_counter() - started,
    )


def _existing(
    location: str, storage_options: dict[str, Any] | None, fingerprint: str, overwrite: bool
) -> tuple[zarr.Group | None, StoreMeta | None]:
    """The store to resume, or (None, None) to start afresh."""
    try:
        group = open_group(location, mode="r+", storage_options=storage_options)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        if (
            not is_url(location)
            and os.path.exists(location)
            and os.listdir(location)
            and not overwrite
        ):
            raise BadInputError(f"{location} exists and is not a crystalgrid dataset") from None
        return None, None
    try:
        meta = StoreMeta.read(group)
    except CrystalgridError:  # not a crystalgrid store, or its attributes are incomplete
        if overwrite:
            return None, None
        raise BadInputError(f"{location} exists and is not a crystalgrid dataset") from None
    if meta.fingerprint != fingerprint:
        if overwrite:
            return None, None
        if meta.density_method != DENSITY_METHOD:
            raise BadInputError(
                f"{location} was gridded by an earlier crystalgrid (density "
                f"{meta.density_method}; this one computes {DENSITY_METHOD}) and cannot be "
                "resumed with it; choose another --out or pass --overwrite"
            )
        raise BadInputError(
            f"{location} holds a dataset built from another source or configuration; "
            "choose another --out or pass --overwrite"
        )
    if meta.state == "creating":
        return None, None  # interrupted while writing the crystal table: cheap to redo
    return group, meta
