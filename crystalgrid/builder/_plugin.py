"""The worker plugin of a build's local Dask cluster (imported only where Dask runs)."""

from __future__ import annotations

import logging

from distributed import Worker
from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["TaskErrorsToTheDriver"]


def _not_a_failed_task(record: logging.LogRecord) -> bool:
    """Logging filter: drop a worker's "Compute Failed" report."""
    return not str(record.msg).startswith("Compute Failed")


class TaskErrorsToTheDriver(WorkerPlugin):
    """A failed task is reported once, by the driver, which raises the task's exception (one
    line for a problem of the user's input or storage, the traceback for a bug), not also by
    the worker that ran it (``distributed.worker`` logs it with its traceback)."""

    def setup(self, worker: Worker) -> None:
        logging.getLogger("distributed.worker").addFilter(_not_a_failed_task)

    def teardown(self, worker: Worker) -> None:
        logging.getLogger("distributed.worker").removeFilter(_not_a_failed_task)
