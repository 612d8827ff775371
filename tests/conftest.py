"""Shared fixtures: small structures built in code, and the path to ../shared/data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout (only CI and developers have it)")
    return SHARED_DATA


@pytest.fixture
def nacl():
    """Rock-salt NaCl, conventional cell (8 atoms, a = 5.64 Å)."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


@pytest.fixture
def triclinic():
    """A low-symmetry 5-atom cell with all angles away from 90 degrees."""
    from pymatgen.core import Lattice, Structure

    lattice = Lattice.from_parameters(4.1, 5.3, 6.2, 78.0, 95.0, 107.0)
    coords = [
        [0.1, 0.2, 0.3],
        [0.6, 0.1, 0.8],
        [0.35, 0.7, 0.15],
        [0.8, 0.55, 0.5],
        [0.0, 0.9, 0.65],
    ]
    return Structure(lattice, ["Ti", "O", "O", "Sr", "Fe"], coords)


@pytest.fixture(scope="session")
def demo_records():
    """30 small demo structures (pymatgen's own), as (id, Structure)."""
    out = []
    from crystalgrid.sources import DemoSource, parse_record

    for record in DemoSource().records():
        s = parse_record(record)
        if max(s.lattice.abc) < 10 and len(s) <= 12:
            out.append((record.material_id, s))
        if len(out) == 30:
            break
    return out


@pytest.fixture
def json_source(tmp_path, demo_records):
    """A JSON source of the 30 demo structures plus one too big and one too close."""
    from pymatgen.core import Lattice, Structure

    records = [
        {"material_id": m, "structure": s.as_dict(), "band_gap": 0.1 * i}
        for i, (m, s) in enumerate(demo_records)
    ]
    big = Structure(Lattice.cubic(12.0), ["Cu"], [[0, 0, 0]])
    close = Structure(Lattice.cubic(4.0), ["O", "O"], [[0, 0, 0], [0.05, 0, 0]])
    records += [
        {"material_id": "big", "structure": big.as_dict()},
        {"material_id": "close", "structure": close.as_dict()},
    ]
    path = tmp_path / "structures.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(records, f)
    return path


@pytest.fixture
def small_build(json_source, tmp_path):
    """``small_build(representation)``: a store of ``json_source`` built with 2 samples per
    crystal in blocks of 24, at ``tmp_path/s.zarr`` (single) or ``r.zarr`` (repeated)."""
    from crystalgrid import BuildConfig, build

    def make(representation: str) -> Path:
        out = tmp_path / f"{representation[0]}.zarr"
        config = BuildConfig(representation=representation, samples_per_crystal=2, block_samples=24)
        build(json_source, out, config=config, quiet=True)
        return out

    return make


@pytest.fixture(scope="session")
def forget_s3_filesystems():
    """A function that closes the S3 client of every cached s3fs filesystem, on its own event
    loop, then clears the cache: for tests that point s3fs at another endpoint or keys."""

    def _forget() -> None:
        """Close the S3 client of every cached s3fs filesystem on its own event loop, then clear
        the cache (a filesystem dropped with its client open makes aiohttp print "Unclosed client
        session" when it is collected in the main thread: s3fs's finalizer then schedules the
        close on an event loop that never runs)."""
        import fsspec.asyn
        import s3fs
        import zarr.core.sync

        for fs in list(s3fs.S3FileSystem._cache.values()):
            client = getattr(fs, "_s3", None)
            if client is None:
                continue
            if fs.asynchronous:  # zarr's: on zarr's own loop
                zarr.core.sync.sync(client.__aexit__(None, None, None))
            else:
                fsspec.asyn.sync(fs.loop, client.__aexit__, None, None, None)
            fs._s3 = None
        s3fs.S3FileSystem.clear_instance_cache()

    return _forget
