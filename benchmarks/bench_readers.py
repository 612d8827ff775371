"""Load: four ranks read one store through ``to_torch(shuffle=True)`` while a build writes
another store beside it.

Each rank is a process of its own, as in a multi-GPU job: it reads the train split of the
store, density and species in batches of 24, through a ``DataLoader`` over
``view.to_torch(shuffle=True, rank=r, world_size=4, batch_size=24)`` (its own DataLoader
workers: ``--loader-workers``), for ``--epochs`` epochs. Meanwhile ``crystalgrid build`` writes
the demo set to another store in the same folder (or bucket). The check: in every epoch, no
rank sees a sample twice, the ranks together see every sample, and they see
``4 * ceil(n / 4)`` in all (the equal shares repeat the first samples of the order, as
``DistributedSampler``); no reader or build fails. The table gives each rank's samples per
second and peak memory (its process and its loader workers' high-water marks, ``ru_maxrss``).

The store is local, or with ``--s3`` on moto's S3 server, which the script starts on
127.0.0.1 and stops (no other address is contacted).

Run::

    python benchmarks/bench_readers.py [--s3] [--epochs 2] [--loader-workers 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RANKS = 4
BATCH = 24
BUCKET = "crystalgrid-bench"


def read(location: str, rank: int, epochs: int, loader_workers: int) -> dict:
    """One rank's epochs: the indices it saw in each, samples per second, peak memory."""
    import torch

    from crystalgrid import open_dataset

    view = open_dataset(location).split("train")
    dataset = view.to_torch(
        ("density", "species"), shuffle=True, seed=0, rank=rank, world_size=RANKS, batch_size=BATCH
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, num_workers=loader_workers, persistent_workers=False
    )
    seen, started = [], time.perf_counter()
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        seen.append([int(i) for batch in loader for i in batch["index"]])
    seconds = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "rank": rank,
        "n": len(view),
        "seen": seen,
        "samples_per_s": sum(map(len, seen)) / seconds,
        "peak_mib": own,
        "worker_peak_mib": children,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_s3(env: dict[str, str]) -> subprocess.Popen:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("moto's server did not start") from None
            time.sleep(0.1)
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
    )
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem().mkdir(BUCKET)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--s3", action="store_true", help="the stores on moto's S3 server")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--loader-workers", type=int, default=1)
    parser.add_argument("--reader", help=argparse.SUPPRESS)  # a rank's process: the store
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        print(json.dumps(read(args.reader, args.rank, args.epochs, args.loader_workers)))
        return

    repo = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
    }
    server = _start_s3(env) if args.s3 else None
    folder = tempfile.mkdtemp(prefix="bench-readers-")
    base = f"s3://{BUCKET}" if args.s3 else folder
    cli = [sys.executable, "-m", "crystalgrid", "build", "--samples", "3", "--quiet"]
    try:
        subprocess.run([*cli, "--out", f"{base}/read.zarr"], env=env, check=True)
        writer = subprocess.Popen(
            [*cli, "--workers", "1", "--out", f"{base}/written.zarr"], env=env
        )
        options = ["--epochs", str(args.epochs), "--loader-workers", str(args.loader_workers)]
        readers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--reader",
                    f"{base}/read.zarr",
                    "--rank",
                    str(r),
                    *options,
                ],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for r in range(RANKS)
        ]
        results = []
        for proc in readers:
            out, _ = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise SystemExit(f"rank failed with exit status {proc.returncode}")
            results.append(json.loads(out))
        if writer.wait(timeout=1800) != 0:
            raise SystemExit("the build beside the readers failed")
    finally:
        if server is not None:
            server.kill()
            server.wait()

    n = results[0]["n"]
    for epoch in range(args.epochs):
        shares = [r["seen"][epoch] for r in results]
        assert all(len(s) == len(set(s)) == math.ceil(n / RANKS) for s in shares), "a repeat"
        assert set().union(*map(set, shares)) == set(range(n)), "a sample never came"
    print(f"{platform.node()}: {os.cpu_count()} cores, {RANKS} ranks x {args.epochs} epochs of")
    print(f"{n} train samples, {'S3 (moto)' if args.s3 else 'local'} store, loader workers")
    print(f"{args.loader_workers}, a build writing beside; every epoch checked\n")
    print("| rank | samples/s | peak MiB (rank) | peak MiB (a loader worker) |")
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {r['rank']} | {r['samples_per_s']:.0f} | {r['peak_mib']:.0f} | "
            f"{r['worker_peak_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
