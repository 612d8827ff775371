"""Scale benchmark: a derived collection of >= 50,000 crystals built end to end.

The collection is derived from the 3,207 Materials Project binaries in
``../shared/data/mp_binaries/mp_binaries.json.gz`` (CC-BY 4.0, Jain et al. 2013): crystal
``k`` is base record ``k mod 3207`` with

- its lattice strained by a random symmetric strain, each component uniform in +-3 %;
- every site displaced by a Gaussian of 0.05 Å per Cartesian axis;
- each element, with probability 1/2, replaced by another element of the same periodic-table
  group that occurs in the data (the replacement is one-to-one within a crystal);

all drawn from ``numpy.random.default_rng([seed, k])``, so the set is deterministic and the
first N crystals of a larger set are the set of N. It is written page by page (1,000 records
per gzipped page) with :class:`crystalgrid.collection.CollectionWriter`, never held whole,
and the build reads it back page by page.

Each run is ``crystalgrid build --workers N`` (the library call) for N = 1, 2, 4, in a fresh
Python process, so that ``getrusage`` gives that run's peaks alone. Reported per run:
crystals/s (input crystals, rejects included, over the wall time of all representations), the
driver's peak RSS (with ``--workers 1`` the gridding runs in the driver too), the largest
worker process's peak RSS (N > 1), and the bytes written. The build runs at two sizes
(``--small`` and ``--crystals``) to show that a worker's peak memory does not grow with the
collection, and how much the driver's does (it holds the table of kept structures).

Run (the full benchmark: ~45 min on 2 cores, ~25 GB of scratch disk at a time, in the temp
directory or ``--workdir``)::

    python benchmarks/bench_scale.py --crystals 50000 --small 5000 --workers 1,2,4

    python benchmarks/bench_scale.py --crystals 2000 --small 500 --workers 1,2   # quick check
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BASE = SHARED / "mp_binaries" / "mp_binaries.json.gz"
PAPER_CRYSTALS = 46_744
PAGE = 1000  # records per collection page
MIB = 1 << 20

#: The derivation's parameters: recorded in the collection's manifest; a change rewrites it.
RECIPE = {
    "base": "mp_binaries.json.gz",
    "strain": 0.03,  # max |component| of the symmetric strain (fraction)
    "displacement": 0.05,  # Å, standard deviation per Cartesian axis
    "substitution": 0.5,  # probability per element of a same-group replacement
    "version": 1,
}


# --------------------------------------------------------------------------------------
# The derived collection.


def _group_table(bases: list[dict[str, Any]]) -> dict[str, list[str]]:
    """For each element in the data: the other elements of its group that occur in the data."""
    from pymatgen.core import Element

    present = sorted(
        {sp["element"] for r in bases for site in r["structure"]["sites"] for sp in site["species"]}
    )
    by_group: dict[int, list[str]] = {}
    for el in present:
        by_group.setdefault(Element(el).group, []).append(el)
    return {el: [o for o in by_group[Element(el).group] if o != el] for el in present}


def derive(base: dict[str, Any], k: int, seed: int, groups: dict[str, list[str]]) -> dict:
    """Crystal ``k`` of the derived set: base ``base`` strained, shaken and substituted.

    Returns a collection record ``{"material_id", "formula", "structure", "properties"}``
    with a plain ``Structure.as_dict()``-style structure.
    """
    rng = np.random.default_rng([seed, k])
    structure = base["structure"]
    matrix = np.asarray(structure["lattice"]["matrix"], dtype=float)
    eps = rng.uniform(-RECIPE["strain"], RECIPE["strain"], (3, 3))
    eps = (eps + eps.T) / 2
    matrix = matrix @ (np.eye(3) + eps)
    elements = [site["species"][0]["element"] for site in structure["sites"]]
    frac = np.array([site["abc"] for site in structure["sites"]], dtype=float)
    shift = rng.normal(0.0, RECIPE["displacement"], frac.shape)  # Å
    frac = (frac + shift @ np.linalg.inv(matrix)) % 1.0

    mapping: dict[str, str] = {}
    taken = set(elements)
    for el in sorted(set(elements)):
        draw = rng.random()
        options = [o for o in groups.get(el, []) if o not in taken]
        if draw < RECIPE["substitution"] and options:
            new = options[int(rng.integers(len(options)))]
            mapping[el] = new
            taken.add(new)
    elements = [mapping.get(el, el) for el in elements]
    counts = Counter(elements)
    return {
        "material_id": f"{base['material_id']}~d{k}",
        "formula": "".join(f"{el}{n}" for el, n in sorted(counts.items())),
        "structure": {
            "@module": "pymatgen.core.structure",
            "@class": "Structure",
            "charge": 0,
            "lattice": {"matrix": matrix.round(8).tolist(), "pbc": [True, True, True]},
            "properties": {},
            "sites": [
                {
                    "species": [{"element": el, "occu": 1.0}],
                    "abc": f.round(8).tolist(),
                    "properties": {},
                    "label": el,
                }
                for el, f in zip(elements, frac, strict=True)
            ],
        },
        "properties": {"strain": float(np.abs(eps).max())},
    }


def write_collection(path: Path, n: int, seed: int) -> Path:
    """Write (or reuse) the derived collection of ``n`` crystals at ``path``, page by page."""
    from crystalgrid.collection import CITATION, FORMAT, LICENCE, CollectionWriter, load_manifest

    wanted = {"recipe": RECIPE, "seed": seed, "n": n}
    manifest = load_manifest(path) if (path / "collection.json").is_file() else None
    if manifest and manifest.get("complete") and manifest.get("derived") == wanted:
        return path
    if path.exists():
        shutil.rmtree(path)
    with gzip.open(BASE, "rt") as fh:
        bases = json.load(fh)  # the 3,207 base records (~10 MB), not the derived set
    groups = _group_table(bases)
    manifest = {
        "format": FORMAT,
        "source": "derived from the Materials Project binaries (benchmarks/bench_scale.py)",
        "licence": LICENCE,
        "citation": CITATION,
        "derived": wanted,
        "complete": False,
        "pages": {},
    }
    with CollectionWriter(path, manifest) as writer:
        for page, start in enumerate(range(0, n, PAGE)):
            records = [
                derive(bases[k % len(bases)], k, seed, groups)
                for k in range(start, min(n, start + PAGE))
            ]
            writer.write_page(page, records)
        writer.update(complete=True)
    return path


# --------------------------------------------------------------------------------------
# Measuring a build.


def _peak_rss(who: int) -> int:
    """Peak resident set size in bytes of this process or of its largest reaped child."""
    return resource.getrusage(who).ru_maxrss * 1024


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(collection: Path, workers: int, reprs: list[str], samples: int, out: Path) -> dict:
    """One end-to-end build of every representation, as ``crystalgrid build --workers N``.

    Runs in a process of its own (see :func:`main`), so that ``getrusage`` gives this build's
    peaks alone: the driver's (``RUSAGE_SELF``) and the largest worker process's
    (``RUSAGE_CHILDREN``: the workers have exited and been reaped when the build returns).
    """
    from crystalgrid.builder import BuildConfig, build_representations
    from crystalgrid.sources.collection import open_collection

    start_mib = _peak_rss(resource.RUSAGE_SELF) / MIB
    start = time.perf_counter()
    source = open_collection(collection)
    n_in = len(source)
    reports = build_representations(
        source,
        {rep: out / f"{rep}.zarr" for rep in reprs},
        config=BuildConfig(samples_per_crystal=samples),
        workers=workers,
        quiet=True,
    )
    kept = reports[0].n_crystals
    samples_written = sum(r.n_samples for r in reports)
    seconds = time.perf_counter() - start
    written = _size(out)
    shutil.rmtree(out)
    return {
        "crystals": n_in,
        "workers": workers,
        "kept": kept,
        "samples": samples_written,
        "seconds": seconds,
        "rate": n_in / seconds,
        "driver_start_mib": start_mib,
        "driver_mib": _peak_rss(resource.RUSAGE_SELF) / MIB,
        # One worker grids in the driver process (no worker process to measure).
        "worker_mib": _peak_rss(resource.RUSAGE_CHILDREN) / MIB if workers > 1 else None,
        "gb": written / 1e9,
    }


def _measure_in_child(
    collection: Path, workers: int, reprs: list[str], samples: int, out: Path
) -> dict:
    """:func:`measure` in a fresh Python process; its result comes back as one JSON line."""
    command = [
        sys.executable,
        __file__,
        "--measure",
        json.dumps(
            {
                "collection": str(collection),
                "workers": workers,
                "reprs": reprs,
                "samples": samples,
                "out": str(out),
            }
        ),
    ]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crystals", type=int, default=50_000, help="size of the large set")
    parser.add_argument(
        "--small", type=int, default=None, help="size of the small set (default crystals/10)"
    )
    parser.add_argument("--workers", default="1,2,4", help="local worker counts to time")
    parser.add_argument(
        "--repr", default="both", choices=["both", "single", "repeated"], help="representations"
    )
    parser.add_argument("--samples", type=int, default=3, help="samples per crystal per repr")
    parser.add_argument("--seed", type=int, default=0, help="seed of the derived set")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.measure:
        job = json.loads(args.measure)
        row = measure(
            Path(job["collection"]), job["workers"], job["reprs"], job["samples"], Path(job["out"])
        )
        print(json.dumps(row))
        return
    if not BASE.is_file():
        raise SystemExit(f"{BASE} not found: ../shared/data must be beside the checkout")
    small = args.small or max(1, args.crystals // 10)
    sizes = sorted({small, args.crystals})
    counts = [int(w) for w in args.workers.split(",")]
    reprs = ["single", "repeated"] if args.repr == "both" else [args.repr]

    work = Path(args.workdir or tempfile.mkdtemp(prefix="cg-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"# crystalgrid scale benchmark: {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"# derived set (seed {args.seed}) of {', '.join(f'{n:,}' for n in sizes)} crystals; "
        f"{' + '.join(reprs)}, {args.samples} samples per crystal each"
    )
    collections = {}
    for n in sizes:
        start = time.perf_counter()
        collections[n] = write_collection(work / f"derived-{n}", n, args.seed)
        print(f"# collection of {n:,}: {time.perf_counter() - start:.1f} s to write or check")
    print()
    print(
        "| crystals | workers | kept | samples | seconds | crystals/s "
        "| driver peak MiB | worker peak MiB | GB written | paper set (46,744) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for n in sizes:
        for workers in counts:
            row = _measure_in_child(collections[n], workers, reprs, args.samples, work / "out")
            rows.append(row)
            print(
                f"| {row['crystals']:,} | {workers} | {row['kept']:,} | {row['samples']:,} "
                f"| {row['seconds']:.1f} | {row['rate']:.1f} "
                f"| {row['driver_mib']:.0f} | {_mib(row['worker_mib'])} | {row['gb']:.2f} "
                f"| {PAPER_CRYSTALS / row['rate'] / 60:.1f} min |",
                flush=True,
            )
    if len(sizes) == 2:
        print()
        print(f"Peak memory as the collection grows {sizes[1] / sizes[0]:.0f}x:")
        print("| workers | driver MiB small -> large | worker MiB small -> large | worker ratio |")
        print("|---|---|---|---|")
        for workers in counts:
            a, b = (r for r in rows if r["workers"] == workers)
            ratio = f"{b['worker_mib'] / a['worker_mib']:.2f}" if a["worker_mib"] else "-"
            print(
                f"| {workers} | {a['driver_mib']:.0f} -> {b['driver_mib']:.0f} "
                f"| {_mib(a['worker_mib'])} -> {_mib(b['worker_mib'])} | {ratio} |"
            )
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
