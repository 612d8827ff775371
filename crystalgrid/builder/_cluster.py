"""The Dask cluster of a build: a given scheduler, or local workers (one in this process)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

from crystalgrid.errors import ConfigError, CrystalgridError

__all__ = ["AUTO_WORKERS_MAX", "dask_client", "n_workers", "progress", "resolve_workers"]


#: Scheduler metadata key: the workers a local cluster will have once all have joined.
PLANNED_WORKERS = "crystalgrid-planned-workers"


def n_workers(client: Any) -> int:
    """The workers running, or for a local cluster the workers it will have once all joined."""
    running = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    return max(1, running, int(client.get_metadata(PLANNED_WORKERS, 0)))


#: Messages per connection that dask.distributed keeps for debugging (its
#: ``distributed.admin.low-level-log-length``, 1000 by default). Scan tasks carry their
#: records, so at the default the client and a local scheduler would keep up to 1,000 task
#: messages per worker: most of a large source, in memory for the whole build.
LOG_LENGTH = 16


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[Any]:
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


#: Seconds a build that ends while local workers are still starting waits for them to join or
#: fail (a worker process starts in ~0.5 s).
START_GRACE_S = 10.0


@contextlib.contextmanager
def _local_cluster(workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster, Worker
    from distributed.core import Status

    from crystalgrid.builder._plugin import TaskErrorsToTheDriver

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
        # The cluster lists its workers once all it started have joined or failed: a build
        # that ends before then waits for them (bounded), so a failure is reported, not missed.
        deadline = time.monotonic() + START_GRACE_S
        while len(cluster.workers) < len(cluster.worker_spec) and time.monotonic() < deadline:
            time.sleep(0.05)
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
        ConfigError: neither ``"auto"`` nor a whole number >= 1.
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
        raise ConfigError(f"workers must be 'auto' or a whole number >= 1, got {workers!r}")
    return count


def progress(total: int | None, desc: str, quiet: bool) -> Any:
    """A tqdm progress bar counting crystals (``total`` None: unknown), hidden when ``quiet``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="crystal", disable=quiet, smoothing=0.1)
