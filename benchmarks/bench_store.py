"""Store speed and size: compressors for the grids.

Builds a ``repeated`` store from the Materials Project binaries in ../shared/data (or the demo
set), then, for each compressor candidate, bytes per sample and write/read samples per second
of the density and species grids (the same grids each time). Loader throughput is measured by
``benchmarks/bench_loading.py`` on such a store.

Run::

    python benchmarks/bench_store.py            # MP binaries (3,207 records), ~10k samples
    python benchmarks/bench_store.py --demo     # the embedded demo set
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def compressors(density: np.ndarray, species: np.ndarray, tmp: Path) -> None:
    from zarr.codecs import BloscCodec

    n = len(density)
    print(f"\n## Compressors ({n} real grids, chunks of 24 samples, write and read of all)\n")
    print("| array | dtype | codec | KB/sample | ratio | write samples/s | read samples/s |")
    print("|---|---|---|---|---|---|---|")
    cases = [("density", d, density.astype(d)) for d in ("float32", "float16")]
    cases.append(("species", "uint8", species))
    for name, dtype, data in cases:
        for cname, level in (("lz4", 5), ("zstd", 1), ("zstd", 3), ("zstd", 5), ("lz4hc", 5)):
            path = tmp / f"c-{name}-{dtype}-{cname}{level}.zarr"
            group = zarr.open_group(str(path), mode="w")
            array = group.create_array(
                "x",
                shape=data.shape,
                chunks=(24, *data.shape[1:]),
                dtype=data.dtype,
                compressors=BloscCodec(cname=cname, clevel=level, shuffle="shuffle"),
            )
            start = time.perf_counter()
            array[...] = data
            write = n / (time.perf_counter() - start)
            start = time.perf_counter()
            for s in range(0, n, 96):
                array[s : s + 96]
            read = n / (time.perf_counter() - start)
            size = folder_bytes(path / "x")
            print(
                f"| {name} | {dtype} | blosc-{cname} {level} | {size / n / 1024:.1f} "
                f"| {data.nbytes / size:.1f} | {write:,.0f} | {read:,.0f} |"
            )
            shutil.rmtree(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="use the embedded demo set")
    parser.add_argument("--keep", type=Path, default=None, help="reuse/keep the store here")
    args = parser.parse_args()

    from crystalgrid import BuildConfig, build

    tmp = Path(tempfile.mkdtemp(prefix="cg-store-"))
    location = args.keep or tmp / "repeated.zarr"
    source = (
        None if args.demo or not SHARED.is_dir() else SHARED / "mp_binaries" / "mp_binaries.json.gz"
    )
    print(
        f"# crystalgrid store benchmark: {platform.machine()}, {os.cpu_count()} cores, "
        f"zarr {zarr.__version__}"
    )
    report = build(
        source, location, config=BuildConfig(representation="repeated"), workers=2, quiet=True
    )
    print(f"# {report.summary()}")
    group = zarr.open_group(str(location), mode="r")
    count = min(1536, group["density"].shape[0])
    compressors(group["density"][:count], group["species"][:count], tmp)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
