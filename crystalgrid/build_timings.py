"""Where a build's time goes (not the training's stages): seconds per build stage, summed
over the tasks that ran it.

Stages of the workers (summed over tasks; CPU-bound, so roughly core-seconds): ``parse``
(payload to pymatgen ``Structure``), ``filter`` (the filters and the crystal's arrays),
``read`` (a block's crystals from the store), ``placement`` (rotations, offsets, periodic
images in the box), ``grids`` (density and species), ``write`` (compression and the store's
writes). Stages of the driver (wall seconds): ``scan`` (the whole parallel scan: reading the
source, sharding, waiting for the workers), ``create`` (the crystal table and empty arrays),
``gridding`` (waiting for every block), ``finalize`` (the atoms gathered, checksums,
consolidation) and ``startup`` (the Dask cluster).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping

__all__ = ["DRIVER", "WORKER", "BuildTimings"]

WORKER = ("parse", "filter", "read", "placement", "grids", "write")
DRIVER = ("startup", "scan", "create", "gridding", "finalize")


class BuildTimings(dict[str, float]):
    """Seconds per stage name."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start

    def add(self, other: Mapping[str, float]) -> None:
        """Add another set of stage times (a task's) to these."""
        for name, seconds in other.items():
            self[name] = self.get(name, 0.0) + seconds

    def table(self) -> str:
        """A markdown table: the driver's wall seconds, then the workers' summed seconds."""
        lines = ["| stage | seconds | where |", "|---|---|---|"]
        for names, where in ((DRIVER, "driver, wall"), (WORKER, "workers, summed")):
            lines += [f"| {n} | {self[n]:.2f} | {where} |" for n in names if n in self]
        return "\n".join(lines)
