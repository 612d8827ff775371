"""The training-free peak fit on imperfect densities: accuracy and seconds per sample.

Each case takes the first ``--samples`` samples of a store's test split, spoils their true
densities in one way, decodes them with :func:`crystalgrid.models.decoding.peakfit.fit_atoms` on one
core, and scores the atoms against the truth (``Scorer``):

- ``truth``: the stored density as it is;
- ``noise 1%``: plus white Gaussian noise of sigma = 1% of each grid's maximum (seeded);
- ``noise 1%, clipped``: the same, then clipped at zero (a non-negative output, as a
  network's softplus is, has noise like this: its mean is positive where the density is low);
- ``blur 0.3 Å``: convolved with a Gaussian of sigma 0.3 Å, the edge values continued past
  the faces (as a model's smooth output);
- ``noise 0.02``: plus white noise of sigma 0.02 Å^-3 (a fixed level).

Each spoiled grid is decoded twice: by the default fit (one Gaussian width fitted for the
whole grid, the outermost voxel layer left out of the fits, the expected clipped density
fitted where the grid was clipped) and by the straightforward fit (the width held at the
grid's sigma, every voxel fitted, the grid taken as it is: ``fit_width=False, border=0,
clipped=False``).

Run::

    crystalgrid build --source ../shared/data/mp_binaries/mp_binaries.json.gz --repr single \\
        --out runs/data/mp --samples 3
    python benchmarks/bench_peakfit.py --data runs/data/mp/single.zarr --samples 100
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage
from threadpoolctl import threadpool_limits

from crystalgrid.dataset import open_dataset
from crystalgrid.models.decoding.peakfit import fit_atoms
from crystalgrid.models.scoring.metrics import Scorer


def spoilers(voxel: float, seed: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name -> function from a true density grid to a spoiled one."""
    rng = np.random.default_rng(seed)
    return {
        "truth": lambda g: g,
        "noise 1%": lambda g: g + rng.normal(0, 0.01 * g.max(), g.shape),
        "noise 1%, clipped": lambda g: np.maximum(g + rng.normal(0, 0.01 * g.max(), g.shape), 0),
        "blur 0.3 Å": lambda g: ndimage.gaussian_filter(g, 0.3 / voxel, mode="nearest"),
        "noise 0.02": lambda g: g + rng.normal(0, 0.02, g.shape),
    }


DECODERS: dict[str, dict[str, object]] = {
    "fitted width": {},
    "fixed width": {"fit_width": False, "border": 0, "clipped": False},
}


def run(args: argparse.Namespace) -> None:
    view = open_dataset(args.data).split(args.split)
    batch = view[0 : min(args.samples, len(view))]
    spec = view.spec
    print(f"{len(batch['density'])} {args.split} samples of {args.data}, one thread\n")
    print(
        "| case | decoder | atoms true / found | within 0.5 Å | exact counts | species exact "
        "| s/sample |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, spoil in spoilers(spec.voxel, args.seed).items():
        if args.cases and name not in args.cases:
            continue
        spoiled = [spoil(g) for g in np.asarray(batch["density"], dtype=np.float64)]
        for decoder, options in DECODERS.items():
            scorer = Scorer()
            seconds = 0.0
            for i, grid in enumerate(spoiled):
                t0 = time.perf_counter()
                pos, z = fit_atoms(grid, spec, **options)
                seconds += time.perf_counter() - t0
                scorer.add(
                    pos,
                    z,
                    true_positions=batch["atom_positions"][i],
                    true_numbers=batch["atom_numbers"][i],
                )
            r = scorer.result()
            n = r["n_samples"]
            species = "n/a" if r["species_exact"] is None else f"{100 * r['species_exact']:.1f}%"
            print(
                f"| {name} | {decoder} | {r['n_true_atoms']} / {r['n_pred_atoms']} | "
                f"{100 * r['true_within_radius']:.1f}% | {100 * r['count_exact']:.1f}% | "
                f"{species} | {seconds / n:.3f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a single (or repeated) store")
    parser.add_argument("--split", default="test")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", nargs="*", help="only these cases (names as printed)")
    args = parser.parse_args()
    with threadpool_limits(1):
        run(args)


if __name__ == "__main__":
    main()
