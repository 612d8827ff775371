"""Build a dataset: structures -> filter -> grids -> Zarr, as Dask tasks, resumable.

Three phases, each safe to interrupt:

1. **scan** (parallel over shards of records): parse, filter, record every reject with its
   reason. The kept crystals are split by crystal (a seeded ranking of material ids), ordered
   by split, and written with the rejects into a new store.
2. **grid** (parallel over blocks of crystals): each task makes its crystals' samples and
   writes whole chunks no other task touches, their checksums, its ground-truth atoms (to a
   pending area), and last a done mark. A resumed build skips the blocks marked done.
3. **finalize** (driver): gathers the ragged atoms into ``atoms/`` and ``samples/atom_offset``
   and marks the store complete.

The same source, configuration and seed give byte-identical arrays for any number of
workers: every sample depends only on (seed, material id, sample index), and every task pins
BLAS to one thread so sums are taken in one order. The arrays and how they are written belong
to :mod:`crystalgrid.store`; one build writes a store at a time (:mod:`crystalgrid.lock`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import zarr

from crystalgrid._version import __version__
from crystalgrid.chunk_io import ChunkWriter
from crystalgrid.configs import Config
from crystalgrid.errors import ConfigError, CrystalgridError, RejectedStructure
from crystalgrid.filters import FilterConfig
from crystalgrid.grids.numpy_backend import DENSITY_METHOD
from crystalgrid.grids.placement import REPRESENTATIONS, Crystal, Representation, placements
from crystalgrid.jsonio import utc_now
from crystalgrid.lock import HeldLock, LockGuard, store_lock
from crystalgrid.samples import sample_from_placement
from crystalgrid.sources import RawRecord, Rejected, Source, open_source, parse_record
from crystalgrid.spec import GridSpec
from crystalgrid.splits import METHODS, assign, read_split_file, resolve, split_file_digest
from crystalgrid.stages import StageTimes
from crystalgrid.store import (
    ATTR,
    CHECKSUM,
    CODECS,
    FORMAT,
    LEGACY_DENSITY_METHOD,
    SPLITS,
    blocks_done,
    compressor,
    create_sample_arrays,
    finalize,
    is_url,
    open_group,
    read_crystals,
    remote_errors,
    store_checksum,
    write_block,
    write_whole,
)

__all__ = [
    "BuildConfig",
    "BuildReport",
    "build",
    "build_representations",
    "default_out",
    "resolve_workers",
]

log = logging.getLogger(__name__)

SCAN_SHARD = 64  # records per scan task

#: The reject reason of a record whose parsing or filtering raised an unexpected exception: a
#: bug of crystalgrid or of a library it uses, not a fault of the input.
ERROR = "error"
#: The largest share of a source's records that may end in :data:`ERROR` before the build stops.
MAX_ERROR_SHARE = 0.001


@dataclass(frozen=True, kw_only=True)
class BuildConfig(Config):
    """Everything that decides a dataset's contents (its fingerprint covers all of it).

    Attributes:
        representation: ``"single"`` or ``"repeated"``.
        spec: grid geometry.
        samples_per_crystal: samples per crystal (the paper: 3 of each representation).
        seed: seeds every random choice (rotations, offsets, splits).
        rotate: rotate samples; None means the representation's default.
        split_fractions: train, val, test fractions of crystals.
        split_by: how crystals are split (:mod:`crystalgrid.splits`): ``"auto"`` (the
            source's splits when it has them, else ``"random"``), ``"random"``,
            ``"composition"``, ``"chemsys"`` or ``"source"``.
        chunk_samples: samples per chunk of the grid arrays (match training batches).
        block_samples: target samples per task; rounded to whole chunks and crystals.
        dtype: ``"float32"`` or ``"float16"`` for the density.
        codec: Blosc compressor of the density (``"lz4"``, ``"zstd"``, ``"lz4hc"``).
        compression_level: its level (1-9).
        filters: which structures are kept.
    """

    representation: Representation = "repeated"
    spec: GridSpec = field(default_factory=GridSpec)
    samples_per_crystal: int = 3
    seed: int = 0
    rotate: bool | None = None
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by: str = "auto"
    chunk_samples: int = 24
    block_samples: int = 240
    dtype: str = "float32"
    codec: str = "lz4"
    compression_level: int = 5
    filters: FilterConfig = field(default_factory=FilterConfig)

    config_name = "build configuration"

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ConfigError(
                f"representation must be one of {', '.join(REPRESENTATIONS)}, "
                f"got {self.representation!r}"
            )
        if self.samples_per_crystal < 1:
            raise ConfigError("samples per crystal must be at least 1")
        fractions = tuple(float(f) for f in self.split_fractions)
        if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
            raise ConfigError(
                f"split fractions must be three numbers >= 0 summing to 1, got {fractions}"
            )
        object.__setattr__(self, "split_fractions", fractions)
        if self.split_by not in METHODS:
            raise ConfigError(
                f"split method must be one of {', '.join(METHODS)}, got {self.split_by!r}"
            )
        if self.chunk_samples < 1 or self.block_samples < 1:
            raise ConfigError("chunk and block sizes must be positive")
        if self.dtype not in ("float32", "float16"):
            raise ConfigError(f"density dtype must be float32 or float16, got {self.dtype!r}")
        if self.codec not in CODECS:
            raise ConfigError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if not 1 <= self.compression_level <= 9:
            raise ConfigError("compression level must be in 1..9")

    @property
    def block_crystals(self) -> int:
        """Crystals per task: a whole number of chunks, near ``block_samples`` samples."""
        unit = math.lcm(self.chunk_samples, self.samples_per_crystal)
        return unit * max(1, round(self.block_samples / unit)) // self.samples_per_crystal


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
    #: Seconds per stage (:mod:`crystalgrid.stages`); the scan and the cluster's start-up
    #: are counted in the first store of a multi-representation build.
    timings: StageTimes = field(default_factory=StageTimes)

    def summary(self) -> str:
        """One paragraph for the terminal."""
        inputs = {k: v for k, v in self.rejects.items() if k != ERROR}
        reasons = ", ".join(f"{k} {v}" for k, v in inputs.items()) or "none"
        errors = self.rejects.get(ERROR, 0)
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


# --------------------------------------------------------------------------------------
# Scan: parse and filter (parallel), then order and split (driver).


@dataclass
class ScanResult:
    """Kept crystals in source order, and the rejects."""

    material_ids: list[str] = field(default_factory=list)
    lattices: list[np.ndarray] = field(default_factory=list)
    fracs: list[np.ndarray] = field(default_factory=list)
    numbers: list[np.ndarray] = field(default_factory=list)
    properties: list[dict[str, Any]] = field(default_factory=list)
    given_splits: list[str | None] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)
    rejects: list[tuple[str, str, str]] = field(default_factory=list)


def _scan_shard(
    records: list[RawRecord], filters: dict[str, Any]
) -> tuple[list[tuple], StageTimes]:
    """Parse and filter records (runs on a worker): one result tuple per record, in order, and
    the seconds spent parsing and filtering."""
    config = FilterConfig.from_dict(filters)
    times = StageTimes()
    out: list[tuple] = []
    for record in records:
        try:
            with times.stage("parse"):
                structure = parse_record(record)
            with times.stage("filter"):
                config.check(structure)
                crystal = Crystal.from_structure(structure)
        except RejectedStructure as exc:
            out.append(("reject", record.material_id, exc.reason, exc.detail))
            continue
        except Exception as exc:  # noqa: BLE001 - counted; too many stop the build (ERROR)
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
            detail = f"{record.origin}: {detail} (raised at {_raised_at(exc)})"
            out.append(("reject", record.material_id, ERROR, detail))
            continue
        props = {
            k: float(v)
            for k, v in record.properties.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        out.append(
            (
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


def _scan(source: Source, config: BuildConfig, client: Any, progress: Any) -> ScanResult:
    """Parse and filter every record on the cluster, keeping the source's order."""
    from distributed import as_completed

    result = ScanResult()
    seen: set[str] = set()
    filters = config.filters.to_dict()
    window = 4 * max(1, _n_workers(client))
    pending: dict[str, tuple[int, list[Rejected]]] = {}  # future key -> (shard index, early)
    done: dict[int, tuple[list[tuple], list[Rejected]]] = {}
    next_to_merge = 0
    running = as_completed()

    def merge_ready() -> None:
        nonlocal next_to_merge
        while next_to_merge in done:
            rows, early = done.pop(next_to_merge)
            for rejected in early:
                result.rejects.append((rejected.material_id, rejected.reason, rejected.detail))
            for row in rows:
                if row[0] == "reject":
                    result.rejects.append(row[1:])
                elif row[1] in seen:
                    result.rejects.append((row[1], "duplicate_id", "an earlier record has this id"))
                else:
                    seen.add(row[1])
                    result.material_ids.append(row[1])
                    result.lattices.append(row[2])
                    result.fracs.append(row[3])
                    result.numbers.append(row[4])
                    result.properties.append(row[5])
                    result.given_splits.append(row[6])
            progress.update(len(rows) + len(early))
            next_to_merge += 1

    def collect(future: Any) -> None:
        index, early = pending.pop(future.key)
        rows, times = future.result()
        result.times.add(times)
        done[index] = (rows, early)
        merge_ready()

    for index, (shard, early) in enumerate(_shards(source)):
        future = client.submit(_scan_shard, shard, filters, pure=False)
        pending[future.key] = (index, early)
        running.add(future)
        while running.count() >= window:
            collect(next(running))
    for future in running:
        collect(future)
    return result


def _split_scan(scan: ScanResult, config: BuildConfig, table: dict[str, str] | None) -> np.ndarray:
    """The split code of every kept crystal; crystals a split file does not list are moved
    to the rejects (``not_in_splits``)."""
    split, keep = assign(
        scan.material_ids,
        scan.numbers,
        scan.given_splits,
        method=config.split_by,
        seed=config.seed,
        fractions=config.split_fractions,
        table=table,
    )
    if keep.all():
        return split
    for i in np.flatnonzero(~keep):
        scan.rejects.append((scan.material_ids[i], "not_in_splits", "the split file omits it"))
    kept = np.flatnonzero(keep).tolist()
    for name in ("material_ids", "lattices", "fracs", "numbers", "properties", "given_splits"):
        values = getattr(scan, name)
        setattr(scan, name, [values[i] for i in kept])
    if not kept:
        raise CrystalgridError("the split file lists none of the source's structures")
    return split[keep]


# --------------------------------------------------------------------------------------
# Store creation (driver).


def _create_store(
    group: zarr.Group,
    scan: ScanResult,
    split: np.ndarray,
    config: BuildConfig,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Write the crystals table, rejects and empty sample arrays; return the metadata.

    ``split`` holds the split code (0 train, 1 val, 2 test) of every crystal of ``scan``.
    """
    order = np.lexsort((np.arange(len(split)), split))  # by split, then source order
    n = len(order)
    S = config.samples_per_crystal
    ids = np.array([scan.material_ids[i] for i in order], dtype=str)
    counts = np.array([len(scan.numbers[i]) for i in order], dtype=np.int64)
    write_whole(group, "crystals/material_id", ids)
    write_whole(group, "crystals/split", split[order])
    write_whole(group, "crystals/source_index", order.astype(np.int64))
    write_whole(
        group,
        "crystals/lattice",
        np.array([scan.lattices[i] for i in order]).reshape(n, 3, 3),
    )
    write_whole(group, "crystals/site_offset", np.concatenate([[0], np.cumsum(counts)]))
    write_whole(
        group, "crystals/frac", np.concatenate([scan.fracs[i] for i in order]).reshape(-1, 3)
    )
    write_whole(
        group,
        "crystals/number",
        np.concatenate([scan.numbers[i] for i in order]).astype(np.uint8),
    )
    names = sorted({k for p in scan.properties for k in p})
    for name in names:
        values = np.array([scan.properties[i].get(name, np.nan) for i in order], dtype=np.float64)
        write_whole(group, f"crystals/properties/{name}", values)
    rejects = scan.rejects
    write_whole(group, "rejects/material_id", np.array([r[0] for r in rejects], dtype=str))
    write_whole(group, "rejects/reason", np.array([r[1] for r in rejects], dtype=str))
    write_whole(group, "rejects/detail", np.array([r[2] for r in rejects], dtype=str))

    n_samples = n * S
    block = config.block_crystals * S
    n_blocks = max(1, math.ceil(n / config.block_crystals))
    create_sample_arrays(
        group,
        n_samples=n_samples,
        bins=config.spec.bins,
        chunk_samples=config.chunk_samples,
        block_samples=block,
        n_blocks=n_blocks,
        dtype=config.dtype,
        density_compressor=compressor(config.codec, config.compression_level),
    )

    crystal_counts = {name: int((split == i).sum()) for i, name in enumerate(SPLITS)}
    ranges, start = {}, 0
    for name in SPLITS:
        stop = start + crystal_counts[name]
        ranges[name] = {"crystals": [start, stop], "samples": [start * S, stop * S]}
        start = stop
    meta = dict(meta)
    meta.update(
        state="gridding",
        n_crystals=n,
        n_samples=n_samples,
        n_blocks=n_blocks,
        block_crystals=config.block_crystals,
        splits=ranges,
        rejects=dict(sorted(Counter(r[1] for r in rejects).items())),
        properties=names,
    )
    group.attrs[ATTR] = meta
    return meta


# --------------------------------------------------------------------------------------
# Grid: one block of crystals per task (runs on a worker).


def _grid_block(
    location: str,
    storage_options: dict | None,
    block: int,
    config_dict: dict[str, Any],
    guard: LockGuard | None = None,
) -> tuple[int, StageTimes]:
    """Make and write the samples of one block of crystals; return the crystals done and
    the seconds of each stage. With ``guard``, the build's lock is checked before writing."""
    from threadpoolctl import threadpool_limits

    times = StageTimes()
    config = BuildConfig.from_dict(config_dict)
    S, spec = config.samples_per_crystal, config.spec
    first = block * config.block_crystals
    with times.stage("read"):
        group = open_group(location, mode="r+", storage_options=storage_options)
        meta = group.attrs[ATTR]
        checksum = store_checksum(meta)
        arrays = _opened_arrays(location, storage_options, meta)
        offsets, frac, number, lattice, ids, split = read_crystals(
            group, first, first + config.block_crystals, arrays
        )
    last = first + len(lattice)

    n = (last - first) * S
    bins = spec.bins
    density = np.zeros((n, bins, bins, bins), dtype=config.dtype)
    species = np.zeros((n, bins, bins, bins), dtype=np.uint8)
    transform = np.zeros((n, 4, 4))
    n_atoms = np.zeros(n, dtype=np.int32)
    n_outside = np.zeros(n, dtype=np.int32)
    positions, numbers = [], []
    with threadpool_limits(1):
        for c in range(last - first):
            lo, hi = offsets[c] - offsets[0], offsets[c + 1] - offsets[0]
            crystal = Crystal(lattice[c], frac[lo:hi], number[lo:hi])
            with times.stage("placement"):
                found = placements(
                    crystal,
                    str(ids[c]),
                    config.representation,
                    spec,
                    n_samples=S,
                    seed=config.seed,
                    rotate=config.rotate,
                )
            for k, placement in enumerate(found):
                i = c * S + k
                with times.stage("grids"):
                    sample = sample_from_placement(placement, str(ids[c]), spec)
                density[i] = sample.density
                species[i] = sample.species
                transform[i] = sample.transform
                n_atoms[i] = len(sample.atom_numbers)
                n_outside[i] = sample.n_outside
                positions.append(sample.atom_positions.astype(np.float32))
                numbers.append(sample.atom_numbers)

    start = first * S
    if guard is not None:
        guard.check()  # a build whose lock was taken over writes no more blocks
    with (
        times.stage("write"),
        zarr.config.set({"array.write_empty_chunks": True}),  # verify expects every chunk
    ):
        write_block(
            group,
            block,
            start,
            n,
            pos_num=(positions, numbers),
            values={
                "density": density,
                "species": species,
                "samples/crystal": np.repeat(np.arange(first, last, dtype=np.int32), S),
                "samples/material_id": np.repeat(ids, S),
                "samples/split": np.repeat(split, S),
                "samples/transform": transform,
                "samples/n_atoms": n_atoms,
                "samples/n_outside": n_outside,
            },
            writer=lambda array: ChunkWriter(array, location).write,
            checksum=checksum,
            arrays=arrays,
        )
    return last - first, times


#: The arrays that build tasks opened in this process, by store: opening one reads its
#: metadata (~0.5 ms locally, a request remotely), and a worker grids many blocks of a store.
_OPENED: dict[tuple[str, str, str, str], dict[str, zarr.Array]] = {}


def _opened_arrays(
    location: str, storage_options: dict | None, meta: dict[str, Any]
) -> dict[str, zarr.Array]:
    """The cache of opened arrays of the store at ``location`` as it is now: keyed by its
    fingerprint and creation time too, so a store built anew there gets a fresh one."""
    key = (
        location,
        json.dumps(storage_options, sort_keys=True, default=str),
        meta["fingerprint"],
        meta["created"],
    )
    if key not in _OPENED:
        if len(_OPENED) >= 4:  # a process builds one or two stores at a time
            _OPENED.pop(next(iter(_OPENED)))
        _OPENED[key] = {}
    return _OPENED[key]


# --------------------------------------------------------------------------------------
# The driver.


#: Scheduler metadata key: the workers a local cluster will have once all have joined.
PLANNED_WORKERS = "crystalgrid-planned-workers"


def _n_workers(client: Any) -> int:
    """The workers running, or for a local cluster the workers it will have once all joined."""
    running = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    return max(1, running, int(client.get_metadata(PLANNED_WORKERS, 0)))


#: Messages per connection that dask.distributed keeps for debugging (its
#: ``distributed.admin.low-level-log-length``, 1000 by default). Scan tasks carry their
#: records, so at the default the client and a local scheduler would keep up to 1,000 task
#: messages per worker: most of a large source, in memory for the whole build.
LOG_LENGTH = 16


@contextlib.contextmanager
def _client(workers: int, scheduler: str | None) -> Iterator[Any]:
    """A dask.distributed client: the given scheduler, or a local cluster of ``workers``."""
    import dask
    import distributed  # noqa: F401 - loads its config defaults, before dask.config.set

    # Dask starts local workers with glibc's MALLOC_TRIM_THRESHOLD_ set, which also turns off
    # glibc's adaptive mmap threshold: every temporary array above 128 KiB (a few per grid)
    # becomes a fresh mmap and its pages fault in again, which made the workers' gridding
    # ~1.4x slower than the same code in one process. Build workers are short-lived, so the
    # allocator keeps its defaults there.
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with (
        dask.config.set(
            {
                "distributed.admin.low-level-log-length": LOG_LENGTH,
                "distributed.nanny.pre-spawn-environ": environ,
            }
        ),
        _connect(workers, scheduler) as client,
    ):
        yield client


@contextlib.contextmanager
def _connect(workers: int, scheduler: str | None) -> Iterator[Any]:
    from distributed import Client

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise CrystalgridError(
                f"cannot reach the Dask scheduler at {scheduler}: {exc}"
            ) from exc
        with client:
            yield client
        return
    # One worker runs in this process, from the start; the others are processes, which take
    # ~0.5 s to start: the build does not wait for them, they take tasks as they join. Those
    # that fail to start are reported in one line below, not by tornado's traceback.
    tornado_log = logging.getLogger("tornado.application")
    tornado_log.addFilter(_hide_worker_start_failures)
    try:
        with _local_cluster(workers) as client:
            yield client
    finally:
        tornado_log.removeFilter(_hide_worker_start_failures)


def _hide_worker_start_failures(record: logging.LogRecord) -> bool:
    """Logging filter: drop tornado's traceback of a local worker that failed to start."""
    return "_correct_state" not in record.getMessage()


@contextlib.contextmanager
def _local_cluster(workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster, Worker
    from distributed.core import Status

    from crystalgrid.worker_plugin import TaskErrorsToTheDriver

    with LocalCluster(
        n_workers=0,
        threads_per_worker=1,
        processes=workers > 1,
        dashboard_address=":0",  # any free port: never clashes with a running cluster
        silence_logs=logging.ERROR,
    ) as cluster:
        cluster.worker_spec["in-process"] = {"cls": Worker, "options": {"nthreads": 1}}
        cluster.scale(workers)
        # By address: a client of the cluster object would wait for every worker.
        with Client(cluster.scheduler_address) as client:
            client.register_plugin(TaskErrorsToTheDriver(), name="crystalgrid-task-errors")
            client.wait_for_workers(1)
            client.set_metadata(PLANNED_WORKERS, workers)
            yield client
        failed = [w for w in cluster.workers.values() if w.status == Status.failed]
        if failed:
            warnings.warn(
                f"{len(failed)} of {workers} local workers failed to start and the build ran "
                "without them (a script that builds with workers > 1 must do so under "
                "`if __name__ == '__main__':`)",
                RuntimeWarning,
                stacklevel=1,
            )


#: The most local workers ``"auto"`` starts (each holds ~0.3 GB: pymatgen, zarr, a block).
AUTO_WORKERS_MAX = 8


def resolve_workers(workers: int | str) -> int:
    """The number of local workers: ``workers``, or for ``"auto"`` the cores this process may
    use, at most :data:`AUTO_WORKERS_MAX`.

    Raises:
        CrystalgridError: neither ``"auto"`` nor a whole number >= 1.
    """
    if workers == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            cores = os.cpu_count() or 1
        return max(1, min(cores, AUTO_WORKERS_MAX))
    try:
        count = int(workers)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or str(count) != str(workers).strip():
        raise CrystalgridError(f"--workers must be 'auto' or a whole number >= 1, got {workers!r}")
    return count


def _progress(total: int, desc: str, quiet: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="crystal", disable=quiet, smoothing=0.1)


def _fingerprint(
    config: BuildConfig, source_fingerprint: str, table: dict[str, str] | None = None
) -> str:
    content = {
        "format": FORMAT,
        "config": config.to_dict(),
        "source": source_fingerprint,
        "density_method": DENSITY_METHOD,
    }
    if table:
        content["splits"] = split_file_digest(table)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


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
        raise CrystalgridError(f"splits must map ids to {', '.join(SPLITS)}, got {sorted(bad)}")
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
        CrystalgridError: missing source, no usable structure, an existing store from a
            different configuration (without ``overwrite``), another build writing the
            store (:mod:`crystalgrid.lock`), or more unexpected errors than
            ``max_error_share`` allows (before anything is written). A remote store or source
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
    outs: dict[str, str | os.PathLike[str] | None],
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
        raise ConfigError(f"--max-error-share must be in 0..1, got {max_error_share:g}")
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
    plans = []
    for representation, location in locations.items():
        cfg = replace(config, representation=representation)  # type: ignore[arg-type]
        fingerprint = _fingerprint(cfg, source_fingerprint, table)
        group, meta = _existing(location, storage_options, fingerprint, overwrite)
        plans.append((cfg, location, fingerprint, group, meta))

    reports: list[BuildReport] = []
    if all(meta is not None and meta.get("state") == "complete" for *_, meta in plans):
        return [_report(loc, meta, [], True, started) for _, loc, _, _, meta in plans]
    scan: ScanResult | None = None
    split = np.empty(0, dtype=np.uint8)
    opened = time.perf_counter()
    with _client(workers, scheduler) as client:
        startup = time.perf_counter() - opened
        for cfg, location, fingerprint, group, meta in plans:
            started_one = time.perf_counter()
            times = StageTimes(startup=startup) if not reports else StageTimes()
            resumed = meta is not None
            if meta is not None and meta.get("state") == "complete":
                reports.append(_report(location, meta, [], resumed, started_one))
                continue
            if meta is None:
                if scan is None:
                    with times.stage("scan"):
                        scan = _scan_source(source, cfg, client, quiet, max_error_share)
                        split = _split_scan(scan, cfg, table)
                    times.add(scan.times)
                with times.stage("create"):
                    held[location].check(read=True)  # never clear a store another build took
                    group = open_group_for_writing(location, storage_options)
                    base = _base_meta(source, cfg, fingerprint, source_fingerprint)
                    base["split_by"] = "file" if table else resolve(cfg.split_by, scan.given_splits)
                    if table:
                        base["split_file"] = {
                            "sha256": split_file_digest(table),
                            "ids": len(table),
                        }
                    group.attrs[ATTR] = base
                    meta = _create_store(group, scan, split, cfg, base)
            with times.stage("gridding"):
                todo = _grid_blocks(
                    group,
                    meta,
                    cfg,
                    location,
                    storage_options,
                    client,
                    quiet,
                    times,
                    held[location],
                )
            held[location].check(read=True)
            with times.stage("finalize"), zarr.config.set({"array.write_empty_chunks": True}):
                finalize(group, meta, completed=utc_now())
            report = _report(location, dict(group.attrs[ATTR]), todo, resumed, started_one)
            report.timings = times
            reports.append(report)
    return reports


def _scan_source(
    source: Source, config: BuildConfig, client: Any, quiet: bool, max_error_share: float
) -> ScanResult:
    with _progress(None, "scan", quiet) as bar:  # type: ignore[arg-type]
        scan = _scan(source, config, client, bar)
    _check_errors(scan, source.name, max_error_share)
    if not scan.material_ids:
        reasons = Counter(r[1] for r in scan.rejects)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "it is empty"
        raise CrystalgridError(f"no usable structure in {source.name}: {detail}")
    return scan


def _check_errors(scan: ScanResult, name: str, max_error_share: float) -> None:
    """Stop a build whose records failed with unexpected errors (:data:`ERROR`) in more than
    ``max_error_share`` of the source, before anything is written.

    Raises:
        CrystalgridError: one line with the count and the first error, its type, message and
            where it was raised.
    """
    errors = [r for r in scan.rejects if r[1] == ERROR]
    total = len(scan.material_ids) + len(scan.rejects)
    if not errors or len(errors) <= max_error_share * total:
        return
    material_id, _, detail = errors[0]
    raise CrystalgridError(
        f"{name}: {len(errors)} of {total} records ({len(errors) / total:.1%}) failed with an "
        f"unexpected error, more than --max-error-share {max_error_share:g} allows; the first, "
        f"{material_id}: {detail}. This is a bug of crystalgrid or of a library it uses (numpy, "
        "pymatgen), not of the input; nothing was written"
    )


def open_group_for_writing(location: str, storage_options: dict[str, Any] | None) -> zarr.Group:
    """A new, empty group at ``location`` (its parent folder created for local paths)."""
    if not is_url(location):
        os.makedirs(os.path.dirname(os.path.abspath(location)), exist_ok=True)
    return open_group(location, mode="w", storage_options=storage_options)


def _base_meta(
    source: Source, config: BuildConfig, fingerprint: str, source_fingerprint: str
) -> dict[str, Any]:
    provenance = source.provenance()
    return {
        "format": FORMAT,
        "state": "creating",
        "crystalgrid_version": __version__,
        "created": utc_now(),
        "fingerprint": fingerprint,
        "representation": config.representation,
        "grid": config.spec.to_dict(),
        "seed": config.seed,
        "samples_per_crystal": config.samples_per_crystal,
        "rotate": config.rotate,
        "split_fractions": list(config.split_fractions),
        "config": config.to_dict(),
        "source": provenance,
        "source_fingerprint": source_fingerprint,
        "checksum": CHECKSUM,
        "density_method": DENSITY_METHOD,
        "licence": provenance.get("licence"),
        "citation": provenance.get("citation"),
    }


def _grid_blocks(
    group: zarr.Group,
    meta: dict[str, Any],
    config: BuildConfig,
    location: str,
    storage_options: dict[str, Any] | None,
    client: Any,
    quiet: bool,
    times: StageTimes,
    held: HeldLock,
) -> list[int]:
    """Submit every block not marked done; return the blocks computed (their stage times
    are added to ``times``). Each block checks ``held``'s lock before it writes, and the
    driver after each block: a build whose lock was lost stops."""
    done = blocks_done(group)
    todo = [b for b in range(meta["n_blocks"]) if not done[b]]
    total = meta["n_crystals"]
    with _progress(total, f"grid {config.representation}", quiet) as bar:
        bar.update(total - sum(_block_size(meta, b) for b in todo))
        if todo:
            from distributed import as_completed

            # Workers may run elsewhere, in another working directory: give them an
            # absolute path (they must see the same file system, or use a URL).
            target = location if is_url(location) else os.path.abspath(location)
            futures = [
                client.submit(
                    _grid_block,
                    target,
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
    location: str, meta: dict[str, Any], todo: list[int], resumed: bool, started: float
) -> BuildReport:
    return BuildReport(
        location=location,
        representation=meta["representation"],
        n_crystals=meta["n_crystals"],
        n_samples=meta["n_samples"],
        rejects=meta["rejects"],
        splits={k: v["crystals"][1] - v["crystals"][0] for k, v in meta["splits"].items()},
        blocks_total=meta["n_blocks"],
        blocks_computed=len(todo),
        resumed=resumed,
        seconds=time.perf_counter() - started,
    )


def _block_size(meta: dict[str, Any], block: int) -> int:
    first = block * meta["block_crystals"]
    return max(0, min(meta["block_crystals"], meta["n_crystals"] - first))


def _existing(
    location: str, storage_options: dict | None, fingerprint: str, overwrite: bool
) -> tuple[zarr.Group | None, dict[str, Any] | None]:
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
            raise CrystalgridError(f"{location} exists and is not a crystalgrid dataset") from None
        return None, None
    meta = group.attrs.get(ATTR)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        if overwrite:
            return None, None
        raise CrystalgridError(f"{location} exists and is not a crystalgrid dataset")
    if meta.get("fingerprint") != fingerprint:
        if overwrite:
            return None, None
        method = meta.get("density_method", LEGACY_DENSITY_METHOD)
        if method != DENSITY_METHOD:
            raise CrystalgridError(
                f"{location} was gridded by an earlier crystalgrid (density {method}; this one "
                f"computes {DENSITY_METHOD}) and cannot be resumed with it; "
                "choose another --out or pass --overwrite"
            )
        raise CrystalgridError(
            f"{location} holds a dataset built from another source or configuration; "
            "choose another --out or pass --overwrite"
        )
    if meta.get("state") == "creating":
        return None, None  # interrupted while writing the crystal table: cheap to redo
    return group, meta
