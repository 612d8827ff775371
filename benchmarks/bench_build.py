"""End-to-end build speed: parse, filter, grid, compress, write, in crystals per second.

Builds the paper's workload (3 single + 3 repeated samples per crystal, i.e. 6 grids of each
kind) from the Materials Project binaries in ../shared/data with 1 and 2 local workers, and in
the same run times a straightforward pipeline (pymatgen periodic images, every atom against
every voxel, no store) on a subset, for comparison.

Run::

    python benchmarks/bench_build.py                # all 3,207 records
    python benchmarks/bench_build.py --limit 1000   # quicker
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PAPER_CRYSTALS = 46_744


def straightforward_samples(structure, spec, rng) -> None:
    """The naive method: pymatgen neighbour search for images, full broadcast per voxel."""
    from pymatgen.core import Structure  # noqa: F401

    from crystalgrid.grids import density_grid_reference, species_grid
    from crystalgrid.grids.placement import random_rotation

    centre = structure.lattice.get_cartesian_coords([0.5, 0.5, 0.5])
    for _ in range(3):  # single: rotated cell
        rot = random_rotation(rng)
        pos = (structure.cart_coords - centre) @ rot.T + spec.side / 2
        z = np.array([s.specie.Z for s in structure])
        density_grid_reference(pos, z, spec)
        species_grid(pos, z, spec)
    radius = np.sqrt(3) * spec.side / 2 + spec.cutoff
    for _ in range(3):  # repeated: images within a sphere around the box centre
        offset = rng.random(3) @ structure.lattice.matrix
        sites = structure.get_sites_in_sphere(offset + spec.side / 2, radius)
        pos = np.array([s.coords for s in sites]) - offset
        z = np.array([s.specie.Z for s in sites])
        density_grid_reference(pos, z, spec)
        species_grid(pos, z, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="use the first N records")
    parser.add_argument("--workers", default="1,2", help="worker counts to time")
    parser.add_argument("--naive", type=int, default=20, help="crystals for the naive pipeline")
    args = parser.parse_args()

    from crystalgrid.build_timings import DRIVER, WORKER, BuildTimings
    from crystalgrid.builder import BuildConfig, build_representations
    from crystalgrid.sources import JsonSource, parse_record
    from crystalgrid.spec import GridSpec

    src_path = SHARED / "mp_binaries" / "mp_binaries.json.gz"
    tmp = Path(tempfile.mkdtemp(prefix="cg-bench-"))
    if args.limit:
        with gzip.open(src_path) as f:
            records = json.load(f)[: args.limit]
        src_path = tmp / "subset.json.gz"
        with gzip.open(src_path, "wt") as f:
            json.dump(records, f)
    source = JsonSource(src_path)
    print(f"# crystalgrid build benchmark: {platform.machine()}, {os.cpu_count()} cores")
    print(
        f"# source {src_path} ({sum(1 for _ in source.records())} records), 3 single + 3 repeated"
    )
    print("| workers | crystals kept | samples | seconds | crystals/s | paper set (46,744) |")
    print("|---|---|---|---|---|---|")
    stages = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        out = tmp / f"w{workers}"
        start = time.perf_counter()
        reports = build_representations(
            source,
            {rep: out / f"{rep}.zarr" for rep in ("single", "repeated")},
            config=BuildConfig(samples_per_crystal=3),
            workers=workers,
            quiet=True,
        )
        kept, samples = reports[0].n_crystals, sum(r.n_samples for r in reports)
        seconds = time.perf_counter() - start
        rate = kept / seconds
        projected = PAPER_CRYSTALS * 0.92 / rate / 60  # ~92% of MP cells pass the 10 Å filter
        print(
            f"| {workers} | {kept} | {samples} | {seconds:.1f} | {rate:.0f} | {projected:.1f} min |"
        )
        stages[workers] = BuildTimings()
        for report in reports:
            stages[workers].add(report.timings)
        shutil.rmtree(out)

    print("\nWhere the time goes (seconds; driver stages are wall time, worker stages summed):\n")
    print("| stage | where | " + " | ".join(f"{w} worker(s)" for w in stages) + " |")
    print("|---|---|" + "---|" * len(stages))
    for names, where in ((DRIVER, "driver"), (WORKER, "workers")):
        for name in names:
            cells = " | ".join(f"{t.get(name, 0.0):.2f}" for t in stages.values())
            print(f"| {name} | {where} | {cells} |")

    spec = GridSpec()
    rng = np.random.default_rng(0)
    records = [r for r in source.records()][: args.naive]
    structures = [parse_record(r) for r in records]
    start = time.perf_counter()
    for s in structures:
        straightforward_samples(s, spec, rng)
    seconds = time.perf_counter() - start
    print(
        f"\nstraightforward pipeline (no store, 1 core): "
        f"{len(structures) / seconds:.2f} crystals/s on the first {len(structures)} records"
    )
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
