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

The names here are the public face; the rest lives in private modules: ``_config`` (the
configuration and fingerprint), ``_scan`` (phase 1), ``_block`` (the task of phase 2),
``_cluster`` (the Dask cluster and its worker plugin, ``_plugin``) and ``_driver`` (the
phases in order, resume, the report).
"""

from __future__ import annotations

from crystalgrid.builder._cluster import AUTO_WORKERS_MAX, resolve_workers
from crystalgrid.builder._config import MAX_ERROR_SHARE, BuildConfig
from crystalgrid.builder._driver import BuildReport, build, build_representations, default_out
from crystalgrid.builder._scan import UNEXPECTED_ERROR

__all__ = [
    "AUTO_WORKERS_MAX",
    "MAX_ERROR_SHARE",
    "UNEXPECTED_ERROR",
    "BuildConfig",
    "BuildReport",
    "build",
    "build_representations",
    "default_out",
    "resolve_workers",
]
