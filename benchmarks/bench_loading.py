"""Loader throughput: iter_batches, a plain torch DataLoader, and zarr slicing, side by side.

Reads the train split of a ``repeated`` store (density + species, batches of 24) every way a
training script would, and the straightforward zarr slicing of the same arrays, in one run.
Each row runs in its own process; ``--before PATH`` runs every row a second time with the
crystalgrid package found at PATH (e.g. a ``git worktree`` of an earlier commit), so that the
table compares two versions on the same machine and store. Rows an older version cannot run
(an argument it lacks) are marked "-".

Rates are samples per second, the best of two passes over the same loader (DataLoader workers
are persistent, so their start-up is not counted); slow rows stop after ``--limit`` samples.

Run::

    crystalgrid build --repr repeated --source ../shared/data/mp_binaries/mp_binaries.json.gz \\
        --out /tmp/mp-repeated.zarr --workers 2
    python benchmarks/bench_loading.py --store /tmp/mp-repeated.zarr [--before /tmp/before]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 24
GRIDS = ("density", "species")

#: (key, label): every way of reading that the table shows.
ROWS = (
    ("zarr", "straightforward: zarr slicing of density + species per batch"),
    ("iter", "`iter_batches(24, fields=grids)`"),
    ("iter-shuffle", "`iter_batches(24, shuffle=True, fields=grids)`"),
    ("iter-all", "`iter_batches(24)`, every field (ragged atoms, ids, transforms)"),
    ("slices", "`view[a:a+24]`, every field"),
    ("singles", "random single samples `view[i]` (a chunk decoded per sample)"),
    ("map-shuffle-0", "`DataLoader(view.to_torch(), batch_size=24, shuffle=True)`"),
    ("map-shuffle-2", "the same, `num_workers=2`"),
    ("map-0", "`DataLoader(view.to_torch(), batch_size=24)` (no shuffle)"),
    ("map-2", "the same, `num_workers=2`"),
    ("stream-0", "`DataLoader(view.to_torch(shuffle=True, seed=0, batch_size=24), 24)`"),
    ("stream-2", "the same, `num_workers=2`"),
    ("stream-i64-0", 'the same with `species_dtype="int64"`, 0 workers'),
    ("stream-i64-2", 'the same with `species_dtype="int64"`, `num_workers=2`'),
)


def measure(key: str, store: str, limit: int) -> float | None:
    """Samples per second of one row (None when this crystalgrid cannot run it)."""
    import torch
    import zarr

    from crystalgrid import open_dataset

    torch.set_num_threads(1)
    view = open_dataset(store).split("train")
    n = len(view)

    def passes(make, cap: int = n) -> float:
        best = 0.0
        iterable = make()
        for _ in range(2):
            start, count = time.perf_counter(), 0
            for batch in iterable:
                count += len(batch["index"])
                if count >= cap:
                    break
            best = max(best, count / (time.perf_counter() - start))
        return best

    if key == "zarr":
        group = zarr.open_group(store, mode="r")
        density, species = group["density"], group["species"]

        def slices():
            for s in range(view.start, view.stop, BATCH):
                density[s : s + BATCH]
                species[s : s + BATCH]
                yield {"index": range(min(BATCH, view.stop - s))}

        return passes(lambda: _Again(slices))
    if key.startswith("iter"):
        shuffle = key == "iter-shuffle"
        fields = {"fields": GRIDS} if key != "iter-all" else {}
        return passes(lambda: _Again(lambda: view.iter_batches(BATCH, shuffle=shuffle, **fields)))
    if key == "slices":
        return passes(lambda: _Again(lambda: (view[a : a + BATCH] for a in range(0, n, BATCH))))
    if key == "singles":
        picks = np.random.default_rng(0).integers(0, n, size=min(n, 300)).tolist()
        return passes(  # one sample per "batch"
            lambda: _Again(lambda: ({"index": [view[i]["index"]]} for i in picks)), len(picks)
        )
    loader = torch.utils.data.DataLoader
    workers = int(key.rsplit("-", 1)[1])
    common = {"batch_size": BATCH, "num_workers": workers, "persistent_workers": workers > 0}
    if key.startswith("map"):
        shuffle = "shuffle" in key
        cap = limit if shuffle else n
        return passes(lambda: loader(view.to_torch(), shuffle=shuffle, **common), cap)
    extra = {"species_dtype": "int64"} if "i64" in key else {}
    try:
        data = view.to_torch(shuffle=True, seed=0, batch_size=BATCH, **extra)
    except TypeError:  # an older crystalgrid
        return None
    return passes(lambda: loader(data, **common))


class _Again:
    """An iterable that calls ``make()`` for each pass."""

    def __init__(self, make) -> None:
        self.make = make

    def __iter__(self):
        return iter(self.make())


def run_rows(store: str, limit: int, package: str | None) -> dict[str, float | None]:
    """Every row, each in a fresh process importing crystalgrid from ``package`` (a source
    tree) or from the environment."""
    env = dict(os.environ)
    if package:
        env["PYTHONPATH"] = os.pathsep.join([package, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = {}
    for key, _ in ROWS:
        command = [sys.executable, __file__, "--store", store, "--limit", str(limit), "--row", key]
        with tempfile.TemporaryDirectory() as cwd:  # not the repository: PYTHONPATH decides
            done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"row {key} failed:\n{done.stderr[-2000:]}")
        out[key] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {key}: {out[key]}", file=sys.stderr, flush=True)
    return out


def machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="a repeated store (its train split)")
    parser.add_argument("--before", default=None, help="source tree of an earlier crystalgrid")
    parser.add_argument("--limit", type=int, default=2400, help="samples of the slow rows")
    parser.add_argument("--row", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        print(json.dumps(measure(args.row, args.store, args.limit)))
        return
    store = os.path.abspath(args.store)
    after = run_rows(store, args.limit, str(Path(__file__).resolve().parents[1]))
    before = run_rows(store, args.limit, os.path.abspath(args.before)) if args.before else None
    print(f"# crystalgrid loader benchmark: {machine()}")
    print(f"# store {store}, train split, batches of {BATCH}, density + species\n")
    header = "| read | before | after |" if before else "| read | samples/s |"
    print(header)
    print("|---|---|---|" if before else "|---|---|")

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    for key, label in ROWS:
        if before:
            print(f"| {label} | {cell(before[key])} | {cell(after[key])} |")
        else:
            print(f"| {label} | {cell(after[key])} |")


if __name__ == "__main__":
    main()
