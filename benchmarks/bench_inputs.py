"""Peak memory of reading large inputs: JSON, JSON.gz, JSON Lines, CSV, extended XYZ and
OPTIMADE Parquet, 10k to 1M records.

Writes each input with N records (copies of real structures under new ids: the MP binaries in
../shared/data, else the demo set), then, each in a fresh process, reads every record through
crystalgrid's source (as a build's driver does) and, in the same run, through the
straightforward whole-file read (``json.load``; ``pyarrow.parquet.read_table(...).to_pylist()``;
ASE's ``read(path, index=":")``). It prints the peak resident memory (RSS) of each process;
the source's should not grow with N.

Run::

    python benchmarks/bench_inputs.py --records 10000 100000
    python benchmarks/bench_inputs.py --records 100000 1000000 --formats parquet
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FORMATS = ("json", "json.gz", "jsonl", "csv", "extxyz", "parquet")
#: The straightforward whole-file read each format is compared with.
WHOLE_FILE = {
    "json": "json.load",
    "json.gz": "json.load",
    "extxyz": "ase.io.read",
    "parquet": "read_table",
}


def templates() -> list[dict]:
    """Real records to copy: ``{"material_id", "structure"}`` with a Structure dict."""
    path = SHARED / "mp_binaries" / "mp_binaries.json.gz"
    if path.exists():
        with gzip.open(path, "rt") as fh:
            return [
                {"material_id": r["material_id"], "structure": r["structure"]}
                for r in json.load(fh)[:200]
            ]
    from crystalgrid.sources import DemoSource, parse_record

    return [
        {"material_id": r.material_id, "structure": parse_record(r).as_dict()}
        for r in list(DemoSource().records())[:200]
    ]


def write_inputs(folder: Path, n: int, formats: tuple[str, ...]) -> dict[str, Path]:
    """The N-record inputs, one per format."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    base = templates()
    structures = [Structure.from_dict(r["structure"]) for r in base]
    cifs = [str(CifWriter(s)) for s in structures]
    paths = {f: folder / f"records-{n}.{f}" for f in formats}
    if "extxyz" in formats:
        write_extxyz(paths["extxyz"], structures, n)
    if "parquet" in formats:
        write_parquet(paths["parquet"], structures, n)
    if not {"json", "json.gz", "jsonl", "csv"} & set(formats):
        return paths

    def records():
        for i in range(n):
            yield {"material_id": f"x-{i}", "structure": base[i % len(base)]["structure"]}

    paths["json"] = paths.get("json", folder / f"records-{n}.json")
    with open(paths["json"], "w") as fh:
        fh.write("[")
        for i, record in enumerate(records()):
            fh.write(("," if i else "") + json.dumps(record))
        fh.write("]")
    with (
        open(paths["json"], "rb") as src,
        gzip.open(paths["json.gz"], "wb", compresslevel=1) as dst,
    ):
        while block := src.read(1 << 24):
            dst.write(block)
    if "jsonl" in paths:
        with open(paths["jsonl"], "w") as fh:
            for record in records():
                fh.write(json.dumps(record) + "\n")
    if "csv" in paths:
        with open(paths["csv"], "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["material_id", "cif"])
            for i in range(n):
                writer.writerow([f"x-{i}", cifs[i % len(cifs)]])
    return paths


def write_extxyz(path: Path, structures: list, n: int) -> None:
    """N frames with ids, written from text (ASE's own writer is slow at 1M frames)."""
    frames = []
    for s in structures:
        lattice = " ".join(f"{x:.8f}" for x in s.lattice.matrix.ravel())
        atoms = "".join(
            f"{site.specie.symbol} {x:.8f} {y:.8f} {z:.8f}\n"
            for site, (x, y, z) in zip(s, s.cart_coords, strict=True)
        )
        frames.append((len(s), lattice, atoms))
    with open(path, "w") as fh:
        for i in range(n):
            count, lattice, atoms = frames[i % len(frames)]
            fh.write(
                f'{count}\nLattice="{lattice}" Properties=species:S:1:pos:R:3 '
                f'material_id=x-{i} energy=-1.0 pbc="T T T"\n{atoms}'
            )


def write_parquet(path: Path, structures: list, n: int) -> None:
    """N rows with OPTIMADE fields, written in row groups of 10,000."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for s in structures:
        symbols = [site.specie.symbol for site in s]
        rows.append(
            {
                "lattice_vectors": s.lattice.matrix.tolist(),
                "species_at_sites": symbols,
                "cartesian_site_positions": s.cart_coords.tolist(),
                "species": [
                    {"name": e, "chemical_symbols": [e], "concentration": [1.0]}
                    for e in sorted(set(symbols))
                ],
                "nsites": len(s),
                "energy": -1.0,
            }
        )
    writer = None
    for start in range(0, n, 10_000):
        block = [
            {"immutable_id": f"x-{i}", **rows[i % len(rows)]}
            for i in range(start, min(n, start + 10_000))
        ]
        table = pa.Table.from_pylist(block)
        if writer is None:
            writer = pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


def read(path: str, how: str) -> dict:
    """Read every record of ``path`` (in this process) and return the count and peak RSS."""
    start = time.perf_counter()
    if how == "json.load":
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as fh:
            count = len(json.load(fh))
    elif how == "read_table":
        import pyarrow.parquet as pq

        count = len(pq.read_table(path).to_pylist())
    elif how == "ase.io.read":
        import ase.io

        count = len(ase.io.read(path, index=":", format="extxyz"))
    else:
        from crystalgrid.sources import open_source

        count = sum(1 for _ in open_source(path).records())
    return {"count": count, "peak_mib": peak_rss_mib(), "seconds": time.perf_counter() - start}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM on Linux: not inherited across exec)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(path: Path, how: str) -> dict:
    command = [sys.executable, __file__, "--read", str(path), "--how", how]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--read", help=argparse.SUPPRESS)
    parser.add_argument("--how", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read(args.read, args.how)))
        return
    print(f"# crystalgrid input memory: {platform.machine()}, {os.cpu_count()} cores\n")
    print("| input | records | file MB | read by | peak RSS MiB | records/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.records:
            paths = write_inputs(Path(tmp), n, tuple(args.formats))
            for fmt in args.formats:
                ways = ["crystalgrid"] + ([WHOLE_FILE[fmt]] if fmt in WHOLE_FILE else [])
                for how in ways:
                    result = measure(paths[fmt], how)
                    assert result["count"] == n, result
                    size = paths[fmt].stat().st_size / 1e6
                    print(
                        f"| {fmt} | {n:,} | {size:,.0f} | {how} | {result['peak_mib']:,.0f} "
                        f"| {n / result['seconds']:,.0f} |",
                        flush=True,
                    )
            for path in paths.values():
                path.unlink()


if __name__ == "__main__":
    main()
