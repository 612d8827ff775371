"""Grids per second per core: crystalgrid's separable density vs the straightforward evaluation.

For crystals with 5, 20, 60 and 120 atoms per cell, times making the density grid of a
``single`` sample (rotated cell) and of a ``repeated`` sample (periodic crop, shifted), and in
the same run the straightforward evaluation (every atom against every voxel, numpy float64)
on the same atoms. Also times the species grid and the placement (periodic images) alone.

Run (one core, as the figures in docs/benchmarks.md)::

    python benchmarks/bench_grids.py            # real MP crystals from ../shared/data
    python benchmarks/bench_grids.py --demo     # structures shipped with pymatgen
    python benchmarks/bench_grids.py --ab [--before /tmp/before]  # + crops, A/B interleaved
    python benchmarks/bench_grids.py --accuracy # error of the small bases, every MP crop

BLAS is pinned to one thread so the figures are per core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import gzip  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from pymatgen.core import Structure  # noqa: E402

from crystalgrid.grids import density_grid, density_grid_reference, species_grid  # noqa: E402
from crystalgrid.grids.placement import Crystal, placements  # noqa: E402
from crystalgrid.spec import GridSpec  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = (5, 20, 60, 120)


def rate(func, min_time: float = 1.0) -> float:
    """Calls per second of ``func()``, timed for at least ``min_time`` s after a warm-up."""
    func()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_time:
        func()
        n += 1
    return n / elapsed


def pick_crystals(use_demo: bool) -> dict[int | str, tuple[str, Structure]]:
    """One crystal per size: a real cell with that many atoms, or a supercell reaching it."""
    if use_demo or not SHARED.is_dir():
        from crystalgrid.sources import DemoSource, parse_record

        pool = [(r.material_id, parse_record(r)) for r in DemoSource().records()]
    else:
        with gzip.open(SHARED / "mp_binaries" / "mp_binaries.json.gz") as f:
            pool = [(r["material_id"], Structure.from_dict(r["structure"])) for r in json.load(f)]
    pool = [(m, s) for m, s in pool if s.is_ordered and max(s.lattice.abc) < 10.0]
    chosen = {}
    for n in SIZES:
        exact = [(m, s) for m, s in pool if len(s) == n]
        if exact:
            chosen[n] = exact[0]
            continue
        # No cell of that size: the largest real cell whose supercell reaches it.
        for m, s in sorted(pool, key=lambda ms: -len(ms[1])):
            if n % len(s) == 0:
                reps, k = [1, 1, 1], n // len(s)
                while k > 1:  # grow the shortest edge by the smallest factor left
                    factor = next(f for f in (2, 3, 5, 7) if k % f == 0)
                    axis = int(np.argmin(np.array(s.lattice.abc) * reps))
                    reps[axis] *= factor
                    k //= factor
                big = s.copy()
                big.make_supercell(reps)
                chosen[n] = (f"{m} x{reps}", big)
                break
    # The repeated target is stated at ~150 atoms in the box: the real cell whose
    # atomic density comes closest (atoms per 1,000 Å^3).
    dense = min(pool, key=lambda ms: abs(1000 * len(ms[1]) / ms[1].volume - 150))
    chosen["~150 in box"] = dense
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="use pymatgen's structures")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per timing")
    parser.add_argument(
        "--ab",
        action="store_true",
        help="also time crops through one product and through the small bases, interleaved",
    )
    parser.add_argument(
        "--before", default=None, help="with --ab: also time the density of this source tree"
    )
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="only the error of the small bases over every crop of the MP binaries",
    )
    args = parser.parse_args()
    spec = GridSpec()
    if args.accuracy:
        low_rank_accuracy(spec)
        return
    print(f"# crystalgrid grid benchmark, {platform.processor() or platform.machine()}, 1 thread")
    print(f"# numpy {np.__version__}, spec {spec.to_dict()}, cutoff {spec.cutoff:.2f} Å")
    header = (
        "| repr | atoms/cell | crystal | atoms in box / computed | density grids/s "
        "| species grids/s | placement/s | naive grids/s | speed-up | max err / max |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    crystals = pick_crystals(args.demo)
    for n, (mid, structure) in crystals.items():
        crystal = Crystal.from_structure(structure)
        n = len(structure) if isinstance(n, str) else n
        for rep in ("single", "repeated"):
            p = placements(crystal, mid, rep, spec, n_samples=2, seed=0)[1]
            fast = rate(lambda p=p: density_grid(p.positions, p.numbers, spec), args.min_time)
            spc = rate(lambda p=p: species_grid(p.positions, p.numbers, spec), args.min_time)
            plc = rate(
                lambda c=crystal, r=rep, m=mid: placements(c, m, r, spec, n_samples=1, seed=0),
                args.min_time,
            )
            naive = rate(
                lambda p=p: density_grid_reference(p.positions, p.numbers, spec), args.min_time
            )
            exact = density_grid_reference(p.positions, p.numbers, spec)
            err = np.abs(density_grid(p.positions, p.numbers, spec) - exact).max() / exact.max()
            print(
                f"| {rep} | {n} | {mid} | {int(p.inside.sum())} / {len(p.positions)} | {fast:,.0f} "
                f"| {spc:,.0f} | {plc:,.0f} | {naive:,.0f} | {fast / naive:.0f}x | {err:.1e} |"
            )
    if args.ab:
        low_rank_ab(crystals, spec, args.before)


def low_rank_accuracy(spec: GridSpec, reference_every: int = 30) -> None:
    """The density of every crop that goes through the small bases (2 per MP binary), against
    one float64 product of the full factors, and every ``reference_every``-th crystal's
    against the straightforward evaluation; errors as fractions of the grid's maximum."""
    import crystalgrid.grids.numpy_backend as grids

    with gzip.open(SHARED / "mp_binaries" / "mp_binaries.json.gz") as f:
        records = json.load(f)
    full, exact = [], []
    for i, record in enumerate(records):
        structure = Structure.from_dict(record["structure"])
        if not structure.is_ordered:
            continue
        crystal = Crystal.from_structure(structure)
        for p in placements(crystal, record["material_id"], "repeated", spec, n_samples=2, seed=i):
            if len(p.positions) < grids.LOW_RANK_MIN_ATOMS:
                continue
            fast = density_grid(p.positions, p.numbers, spec)
            fx, fy, fz = grids.axis_factors(p.positions, spec, np.float64)
            weights = (p.numbers * spec.norm)[:, None]
            product = np.einsum("mi,mj,mk->ijk", fx * weights, fy, fz, optimize=True)
            full.append(np.abs(fast - product).max() / product.max())
            if i % reference_every == 0:
                ref = density_grid_reference(p.positions, p.numbers, spec)
                exact.append(np.abs(fast - ref).max() / ref.max())
    print("| crops | against | max err / max | median |\n|---|---|---|---|")
    print(f"| {len(full):,} | one float64 product | {max(full):.1e} | {np.median(full):.1e} |")
    print(f"| {len(exact):,} | exact evaluation | {max(exact):.1e} | {np.median(exact):.1e} |")


def earlier_density(tree: str):
    """``density_grid`` of the numpy backend in another source tree (an earlier crystalgrid)."""
    path = Path(tree) / "crystalgrid" / "grids" / "numpy_backend.py"
    module_spec = importlib.util.spec_from_file_location("earlier_numpy_backend", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.density_grid


def low_rank_ab(crystals: dict, spec: GridSpec, before: str | None, rounds: int = 8) -> None:
    """Repeated crops: one product of the full factors vs the small bases (and the density of
    an earlier tree), interleaved."""
    import crystalgrid.grids.numpy_backend as grids

    earlier = earlier_density(before) if before else None
    extra = " before grids/s |" if earlier else ""
    print(f"\n| crystal | atoms computed |{extra} one product grids/s | small bases grids/s |")
    print("|---|---|---|---|" + ("---|" if earlier else ""))
    saved = grids.LOW_RANK_MIN_ATOMS
    try:
        for mid, structure in crystals.values():
            p = placements(Crystal.from_structure(structure), mid, "repeated", spec, n_samples=2)[1]
            if len(p.positions) < saved:
                continue
            one, low, old = [], [], []
            for _ in range(rounds):
                if earlier:
                    old.append(rate(lambda p=p: earlier(p.positions, p.numbers, spec), 0.4))
                grids.LOW_RANK_MIN_ATOMS = 10**9
                one.append(rate(lambda p=p: density_grid(p.positions, p.numbers, spec), 0.4))
                grids.LOW_RANK_MIN_ATOMS = saved
                low.append(rate(lambda p=p: density_grid(p.positions, p.numbers, spec), 0.4))
            cells = [np.median(rates) for rates in (old, one, low) if rates]
            print(
                f"| {mid} | {len(p.positions)} | " + " | ".join(f"{c:,.0f}" for c in cells) + " |"
            )
    finally:
        grids.LOW_RANK_MIN_ATOMS = saved


if __name__ == "__main__":
    main()
