"""Output and input by URL (``s3://``) through fsspec, against moto's S3 server on 127.0.0.1.

The module starts moto's threaded server on an ephemeral port of 127.0.0.1 and stops it at
the end. Credentials and the endpoint reach s3fs only through the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``); nothing in
crystalgrid's code or in these calls names them.
"""

from __future__ import annotations

import gzip
import importlib
import json
import logging

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from crystalgrid import open_dataset
from crystalgrid.builder import BuildConfig, build
from crystalgrid.cli import main
from crystalgrid.errors import CrystalgridError, RemoteStorageError
from crystalgrid.sources import CifDirectorySource, CsvSource, DemoSource, JsonSource, open_source
from crystalgrid.sources import parse_record as parse
from crystalgrid.store import verify

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "crystalgrid-test"
KEY_ID, SECRET = "moto-key-id-5e1c", "moto-secret-9b7d"  # moto accepts any
ARRAYS = (
    "density",
    "species",
    "samples/transform",
    "samples/material_id",
    "samples/atom_offset",
    "atoms/position",
    "atoms/number",
)
CONFIG = BuildConfig(representation="repeated", samples_per_crystal=2, block_samples=24)


@pytest.fixture(scope="module")
def s3(forget_s3_filesystems):
    """moto's S3 server on 127.0.0.1:<ephemeral>, the environment pointing at it, a bucket.

    Yields the s3fs filesystem the tests use to look at and damage objects.
    """
    import s3fs

    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1"
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
            env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
            env.setenv("AWS_DEFAULT_REGION", "us-east-1")
            env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "FSSPEC_S3_ENDPOINT_URL"):
                env.delenv(name, raising=False)
            forget_s3_filesystems()  # none made for another endpoint
            fs = s3fs.S3FileSystem()
            fs.mkdir(BUCKET)
            yield fs
    finally:
        forget_s3_filesystems()
        server.stop()
        werkzeug.setLevel(level)


@pytest.fixture(scope="module")
def demo_records():
    """24 small demo structures (pymatgen's own) as (id, Structure)."""
    out = []
    for record in DemoSource().records():
        structure = parse(record)
        if max(structure.lattice.abc) < 10 and len(structure) <= 12:
            out.append((record.material_id, structure))
        if len(out) == 24:
            break
    return out


@pytest.fixture(scope="module")
def json_file(tmp_path_factory, demo_records):
    """A local JSON.gz of the demo structures plus one cell too big (a reject)."""
    records = [{"material_id": m, "structure": s.as_dict()} for m, s in demo_records]
    big = Structure(Lattice.cubic(12.0), ["Cu"], [[0, 0, 0]])
    records.append({"material_id": "big", "structure": big.as_dict()})
    path = tmp_path_factory.mktemp("src") / "structures.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump(records, fh)
    return path


@pytest.fixture(scope="module")
def local_build(tmp_path_factory, json_file):
    out = tmp_path_factory.mktemp("local") / "local.zarr"
    build(json_file, out, config=CONFIG, quiet=True)
    return out


@pytest.fixture(scope="module")
def s3_build(s3, json_file):
    """The same build written to s3:// by two worker processes, through the CLI."""
    url = f"s3://{BUCKET}/builds/repeated.zarr"
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            str(json_file),
            "--out",
            url,
            "--samples",
            "2",
            "--block",
            "24",
            "--workers",
            "2",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "48 repeated samples of 24 crystals" in result.output
    return url


def _arrays(group: zarr.Group) -> dict[str, np.ndarray]:
    return {name: group[name][...] for name in ARRAYS}


def _assert_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for name in ARRAYS:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        if a[name].dtype.kind in "fiub":
            assert a[name].tobytes() == b[name].tobytes(), f"{name} differs"
        else:
            assert a[name].tolist() == b[name].tolist(), f"{name} differs"


def test_build_to_s3_reads_back_identical(s3, s3_build, local_build, json_file):
    keys = s3.find(f"{BUCKET}/builds/repeated.zarr")
    assert f"{BUCKET}/builds/repeated.zarr/zarr.json" in keys
    assert any("/density/c/" in k for k in keys)
    assert not any("/_pending/" in k for k in keys)  # finalize removed the scratch area
    ds = open_dataset(s3_build)
    local = open_dataset(local_build)
    assert ds.attrs["state"] == "complete" and len(ds) == len(local) == 48
    _assert_identical(_arrays(ds.group), _arrays(local.group))
    # The loading API reads the same batch through the URL.
    batch, expected = ds.split("train")[0:5], local.split("train")[0:5]
    np.testing.assert_array_equal(batch["density"], expected["density"])
    assert batch["material_id"] == expected["material_id"]
    # A rerun of the same command is a no-op on the object store too.
    again = build(json_file, s3_build, config=CONFIG, quiet=True)
    assert again.resumed and again.blocks_computed == 0


def test_info_and_verify_by_url(s3_build):
    runner = CliRunner()
    info = runner.invoke(main, ["info", s3_build])
    assert info.exit_code == 0, info.output
    assert "repeated" in info.output and "max_side" in info.output
    as_json = json.loads(runner.invoke(main, ["info", "--json", s3_build]).output)
    assert as_json["n_crystals"] == 24 and as_json["rejects"] == {"max_side": 1}
    ok = runner.invoke(main, ["verify", s3_build])
    assert ok.exit_code == 0 and "OK" in ok.output, ok.output
    missing = f"s3://{BUCKET}/nothing-here.zarr"
    for verb in ("info", "verify"):
        result = runner.invoke(main, [verb, missing])
        assert result.exit_code == 2, result.output
        assert result.output == f"crystalgrid: error: no dataset at {missing}\n"


def test_resume_on_s3_then_verify_reports_a_deleted_object(s3, json_file, local_build, monkeypatch):
    build_module = importlib.import_module("crystalgrid.builder._driver")
    url = f"s3://{BUCKET}/damaged/repeated.zarr"
    real = build_module._grid_block

    def dies_in_block_1(location, storage_options, block, config_dict, **kwargs):
        if block == 1:
            raise MemoryError("simulated worker death")
        return real(location, storage_options, block, config_dict, **kwargs)

    # One in-process worker (workers=1), so the patched function is the one that runs.
    monkeypatch.setattr(build_module, "_grid_block", dies_in_block_1)
    with pytest.raises(MemoryError):
        build(json_file, url, config=CONFIG, quiet=True)
    assert zarr.open_group(url, mode="r").attrs["crystalgrid"]["state"] == "gridding"
    monkeypatch.setattr(build_module, "_grid_block", real)
    resumed = build(json_file, url, config=CONFIG, quiet=True)
    assert resumed.resumed and resumed.blocks_computed == 1 and resumed.blocks_total == 2
    _assert_identical(
        _arrays(zarr.open_group(url, mode="r")),
        _arrays(zarr.open_group(str(local_build), mode="r")),
    )
    assert verify(url).ok
    s3.rm(f"{BUCKET}/damaged/repeated.zarr/species/c/1/0/0/0")
    report = verify(url)
    assert not report.ok
    assert report.problems == ["missing chunk species/c/1/0/0/0"]
    result = CliRunner().invoke(main, ["verify", url])
    assert result.exit_code == 1
    assert "missing chunk species/c/1/0/0/0" in result.output


def test_sources_by_url(s3, json_file, local_build, demo_records, tmp_path):
    # A JSON.gz on S3 builds the same arrays as the local file.
    s3.put(str(json_file), f"{BUCKET}/sources/structures.json.gz")
    source = open_source(f"s3://{BUCKET}/sources/structures.json.gz")
    assert isinstance(source, JsonSource)
    assert source.provenance()["location"] == f"s3://{BUCKET}/sources/structures.json.gz"
    out = tmp_path / "from_s3.zarr"
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            f"s3://{BUCKET}/sources/structures.json.gz",
            "--out",
            str(out),
            "--samples",
            "2",
            "--block",
            "24",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    _assert_identical(
        _arrays(zarr.open_group(str(out), mode="r")),
        _arrays(zarr.open_group(str(local_build), mode="r")),
    )
    # The fingerprint follows the object's content (ETag and size), not its upload time.
    before = source.fingerprint()
    s3.put(str(json_file), f"{BUCKET}/sources/structures.json.gz")
    assert open_source(f"s3://{BUCKET}/sources/structures.json.gz").fingerprint() == before
    s3.pipe(f"{BUCKET}/sources/structures.json.gz", gzip.compress(b"[]"))
    assert open_source(f"s3://{BUCKET}/sources/structures.json.gz").fingerprint() != before

    # A CIF folder (a key prefix) with id_prop.csv, and a CSV, read the same records as
    # their local copies.
    folder = tmp_path / "cifs"
    folder.mkdir()
    for m, s in demo_records[:4]:
        CifWriter(s).write_file(folder / f"{m.replace(':', '_')}.cif")
    (folder / "empty.cif").write_text("")
    (folder / "id_prop.csv").write_text("pymatgen_Li2O,1.5\n")
    rows = ["material_id,cif,band_gap"]
    rows += [f'{m},"{CifWriter(s)}",{0.5 * i}' for i, (m, s) in enumerate(demo_records[:3])]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    s3.put(str(folder), f"{BUCKET}/sources/cifs", recursive=True)
    s3.put(str(tmp_path / "table.csv"), f"{BUCKET}/sources/table.csv")
    for url, local, kind in (
        (f"s3://{BUCKET}/sources/cifs/", folder, CifDirectorySource),
        (f"s3://{BUCKET}/sources/table.csv", tmp_path / "table.csv", CsvSource),
    ):
        remote = open_source(url)
        assert type(remote) is kind
        assert _records(remote) == _records(open_source(local))
    cif_build = build(f"s3://{BUCKET}/sources/cifs", tmp_path / "cifs.zarr", quiet=True)
    assert cif_build.n_crystals == 4 and cif_build.rejects == {"no_structure": 1}

    with pytest.raises(CrystalgridError, match="source not found"):
        open_source(f"s3://{BUCKET}/sources/missing.json")


def test_parquet_shards_by_url(s3, demo_records, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from crystalgrid.sources import OptimadeParquetSource

    folder = tmp_path / "lemat"
    folder.mkdir()
    for shard, part in enumerate((demo_records[:3], demo_records[3:5])):
        rows = []
        for m, s in part:
            symbols = [site.specie.symbol for site in s]
            rows.append(
                {
                    "immutable_id": m,
                    "lattice_vectors": s.lattice.matrix.tolist(),
                    "species_at_sites": symbols,
                    "cartesian_site_positions": s.cart_coords.tolist(),
                }
            )
        pq.write_table(pa.Table.from_pylist(rows), str(folder / f"part-{shard}.parquet"))
    s3.put(str(folder), f"{BUCKET}/sources/lemat", recursive=True)
    remote = open_source(f"s3://{BUCKET}/sources/lemat/")
    assert type(remote) is OptimadeParquetSource
    assert _records(remote) == _records(open_source(folder))
    assert remote.fingerprint() == open_source(f"s3://{BUCKET}/sources/lemat").fingerprint()
    built = build(f"s3://{BUCKET}/sources/lemat/", tmp_path / "lemat.zarr", quiet=True)
    assert built.n_crystals == 5  # each shard read by a worker, from the bucket


def _records(source) -> list[tuple]:
    """(id, kind, payload text, properties) of every record, or (id, reason) of a reject."""
    out = []
    for record in source.records():
        if hasattr(record, "payload"):
            out.append((record.material_id, record.kind, str(record.payload), record.properties))
        else:
            out.append((record.material_id, record.reason))
    return out


def test_no_credentials_in_the_store(s3, s3_build):
    """The credentials were only in the environment: no stored metadata holds them."""
    for key in s3.find(f"{BUCKET}/builds/repeated.zarr"):
        if key.endswith("zarr.json"):
            text = s3.cat_file(key).decode()
            assert KEY_ID not in text and SECRET not in text, key


@pytest.mark.parametrize("verb", ["info", "verify", "build"])
def test_an_unreachable_endpoint_is_one_line(verb, json_file, tmp_path):
    """Every verb that touches a store by URL ends in one line and exit 2, in a fresh process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",  # nothing listens there
        "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
    }
    url = f"s3://{BUCKET}/nowhere.zarr"
    args = {"info": [url], "verify": [url], "build": ["--source", str(json_file), "--out", url]}
    proc = subprocess.run(
        [sys.executable, "-m", "crystalgrid", verb, *args[verb], "-q"]
        if verb != "info"
        else [sys.executable, "-m", "crystalgrid", verb, *args[verb]],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot connect to the endpoint" in lines[0] and url in lines[0]
    assert SECRET not in proc.stderr


def test_a_missing_bucket_is_one_line(s3, json_file):
    from crystalgrid.errors import RemoteStorageError

    url = "s3://no-such-bucket-here/x.zarr"
    with pytest.raises(RemoteStorageError, match="no such bucket"):
        build(json_file, url, config=CONFIG, quiet=True)
    result = CliRunner().invoke(main, ["build", "--source", str(json_file), "--out", url, "-q"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"crystalgrid: error: {url}: no such bucket"]


def _cli_env() -> dict[str, str]:
    """This process's environment (the fixture's endpoint and keys) with this checkout first
    on the path, for the CLI in a fresh process."""
    import os
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}


def test_remote_cli_commands_end_quietly(s3, json_file, tmp_path):
    """build (two worker processes), info, verify and splits by URL, each in a fresh process,
    print nothing on stderr: no "Unclosed client session" or "Exception ignored" at exit."""
    import subprocess
    import sys

    url = f"s3://{BUCKET}/quiet/repeated.zarr"
    cli = [sys.executable, "-m", "crystalgrid"]
    env = _cli_env()
    built = subprocess.run(
        [*cli, "build", "--source", str(json_file), "--out", url, "-q", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0 and built.stderr == "", built.stderr
    readers = [
        subprocess.Popen(
            [*cli, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args in (["info", url], ["verify", url], ["splits", url, "--out", str(tmp_path / "s")])
    ]
    for proc in readers:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and err == "", (proc.args, err)


def test_a_dataloader_with_workers_reads_a_store_by_url(s3_build, capfd):
    """DataLoader workers (forked) open the store again: the parent's connections belong to
    its event loop. Every sample comes once; the workers exit without a word."""
    torch = pytest.importorskip("torch")
    view = open_dataset(s3_build).split("train")
    assert len(view[0:2]["density"]) == 2  # the parent read (and connected) before the fork
    loader = torch.utils.data.DataLoader(
        view.to_torch(("density",), shuffle=True, batch_size=4), batch_size=4, num_workers=2
    )
    seen = sorted(int(i) for batch in loader for i in batch["index"])
    assert seen == list(range(len(view)))
    assert capfd.readouterr().err == ""


@pytest.fixture
def own_server(monkeypatch, forget_s3_filesystems):
    """moto's server in a process of its own (to kill or pause), on a free port of 127.0.0.1,
    the environment pointing at it and a bucket; yields (process, bucket)."""
    import socket
    import subprocess
    import sys
    import time

    import s3fs

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60  # a bound against hanging, not a timing
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "moto did not start"
                time.sleep(0.1)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        forget_s3_filesystems()
        s3fs.S3FileSystem().mkdir("crystalgrid-own")
        yield server, "crystalgrid-own"
    finally:
        server.kill()  # also a paused one
        server.wait()
        forget_s3_filesystems()


#: A store by URL read by the next tests: 1 sample per crystal in chunks of 4.
SMALL_CHUNKS = BuildConfig(representation="repeated", samples_per_crystal=1, chunk_samples=4)
#: The key of a chunk of the density, named by a failed read.
DENSITY_KEY = r"\(reading density/c/\d+/0/0/0( and \d+ more)?\)$"


def test_an_endpoint_killed_during_iter_batches_is_one_line(json_file, own_server):
    """The server is killed after the first batch: the next read is one RemoteStorageError
    naming the store and the chunk's key."""
    import re

    server, bucket = own_server
    url = f"s3://{bucket}/repeated.zarr"
    build(json_file, url, config=SMALL_CHUNKS, quiet=True)
    batches = open_dataset(url).split("train").iter_batches(4)
    assert len(next(batches)["density"]) == 4
    server.kill()
    server.wait()
    with pytest.raises(RemoteStorageError) as raised:
        for _ in batches:
            pass
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{url}: cannot connect to the endpoint")
    assert re.search(DENSITY_KEY, message), message


def test_a_stalled_endpoint_is_one_line_in_bounded_time(json_file, own_server, monkeypatch):
    """The server is paused (SIGSTOP: connections are accepted, nothing answers) after the
    first batch: the read gives up after the timeouts, in one line naming the store and the
    key; so does verify. The test shortens the timeouts to 1 s and the tries to 1 (botocore's
    and s3fs's), which the defaults multiply to 10 s, 2 and 5."""
    import os
    import re
    import signal

    import s3fs

    server, bucket = own_server
    url = f"s3://{bucket}/repeated.zarr"
    build(json_file, url, config=SMALL_CHUNKS, quiet=True)
    short = {"config_kwargs": {"read_timeout": 1, "connect_timeout": 1}}
    short["config_kwargs"]["retries"] = {"max_attempts": 1}
    batches = open_dataset(url, storage_options=short).split("train").iter_batches(4)
    assert len(next(batches)["density"]) == 4
    os.kill(server.pid, signal.SIGSTOP)
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    with pytest.raises(RemoteStorageError) as raised:
        for _ in batches:
            pass
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{url}: the endpoint stopped answering")
    assert re.search(DENSITY_KEY, message), message
    with pytest.raises(RemoteStorageError, match=f"^{url}: the endpoint stopped answering"):
        verify(url, storage_options=short)


def test_s3_options_bound_timeouts_and_keep_the_callers(monkeypatch):
    import fsspec.config

    from crystalgrid.remote import S3_CONFIG, remote_options

    assert remote_options("/data/x.zarr", {"a": 1}) == {"a": 1}
    assert remote_options("s3://b/x.zarr", None) == {"config_kwargs": S3_CONFIG}
    mine = remote_options("s3://b/x.zarr", {"anon": True, "config_kwargs": {"read_timeout": 60}})
    assert mine["anon"] is True and mine["config_kwargs"]["read_timeout"] == 60
    assert mine["config_kwargs"]["retries"] == S3_CONFIG["retries"]
    # fsspec's configuration (FSSPEC_S3_CONFIG_KWARGS) wins over the defaults too.
    monkeypatch.setitem(fsspec.config.conf, "s3", {"config_kwargs": {"connect_timeout": 99}})
    assert remote_options("s3://b/x.zarr", None)["config_kwargs"]["connect_timeout"] == 99


#: A TCP relay on 127.0.0.1 (argv: its port, moto's port): the endpoint the next tests kill,
#: while the objects stay in moto's process behind it.
RELAY = """
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def relay(reader, writer):
    try:
        upstream = await asyncio.open_connection("127.0.0.1", int(sys.argv[2]))
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, upstream[1]), pipe(upstream[0], writer))

async def serve():
    server = await asyncio.start_server(relay, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(serve())
"""


class _Relay:
    """:data:`RELAY` in a process of its own in front of moto; ``kill`` it, ``start`` it again
    on the same port; ``objects`` reads the store's objects from moto itself."""

    def __init__(self, moto_url: str, bucket: str) -> None:
        import socket

        import s3fs

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.moto_port = int(moto_url.rsplit(":", 1)[1])
        self.bucket = bucket
        self.moto = s3fs.S3FileSystem(endpoint_url=moto_url)
        self.process = None

    def start(self) -> None:
        import subprocess
        import sys

        command = [sys.executable, "-c", RELAY, str(self.port), str(self.moto_port)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline() == "ready\n", "the relay did not start"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()

    def objects(self, prefix: str) -> dict[str, bytes]:
        self.moto.invalidate_cache()
        return {key: self.moto.cat_file(key) for key in self.moto.find(f"{self.bucket}/{prefix}")}


@pytest.fixture
def relay(own_server, monkeypatch, forget_s3_filesystems):
    """A running :class:`_Relay` in front of ``own_server``, the environment pointing at it."""
    import os

    relay = _Relay(os.environ["AWS_ENDPOINT_URL"], own_server[1])
    relay.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay.port}")
        forget_s3_filesystems()
        yield relay
    finally:
        if relay.process.poll() is None:
            relay.kill()


@pytest.fixture(scope="module")
def small_local_build(tmp_path_factory, json_file):
    """A local store built with :data:`SMALL_CHUNKS`, to upload where a test needs it."""
    out = tmp_path_factory.mktemp("small") / "repeated.zarr"
    build(json_file, out, config=SMALL_CHUNKS, quiet=True)
    return out


def _assert_intact(url: str, relay, local) -> None:
    """The store at ``url`` (uploaded from ``local``) verifies, and every object behind the
    relay is byte for byte what was uploaded: the failed reads damaged nothing."""
    assert verify(url).ok
    written = {
        f"{relay.bucket}/repeated.zarr/{path.relative_to(local)}": path.read_bytes()
        for path in local.rglob("*")
        if path.is_file()
    }
    assert relay.objects("repeated.zarr") == written


@pytest.mark.parametrize("workers", [0, 2])
def test_an_endpoint_killed_during_a_dataloader_is_one_line(workers, small_local_build, relay):
    """The endpoint is killed after the first batches of a DataLoader over to_torch: iterating
    ends in one RemoteStorageError naming the store and the chunk's key, with worker processes
    too (torch builds the worker's error again from its traceback); killed before the workers
    open the store, the key is its zarr.json. Started again, the store verifies and its
    objects are those uploaded."""
    import re

    torch = pytest.importorskip("torch")
    relay.moto.put(str(small_local_build), f"{relay.bucket}/repeated.zarr", recursive=True)
    url = f"s3://{relay.bucket}/repeated.zarr"
    # One sample a batch, at most one batch ahead per worker: once each worker has given its
    # first, the first chunk (4 samples) is all that was read, and the split spans several.
    options = {"num_workers": workers}
    if workers:
        options.update(prefetch_factor=1, timeout=120)  # a bound against hanging
    view = open_dataset(url).split("train")
    assert len(view) > 8
    loader = torch.utils.data.DataLoader(view.to_torch(("density",)), **options)
    in_worker = r" \(in DataLoader worker process \d\)" if workers else ""

    def fails(batches: object, key: str) -> None:
        relay.kill()
        with pytest.raises(RemoteStorageError) as raised:
            for _ in batches:  # type: ignore[attr-defined]
                pass
        message = str(raised.value)
        assert "\n" not in message, message
        assert message.startswith(f"{url}: cannot connect to the endpoint"), message
        assert re.search(rf" \(reading {key}\){in_worker}$", message), message
        relay.start()

    batches = iter(loader)
    assert [len(next(batches)["density"]) for _ in range(2)] == [1, 1]  # from each worker
    fails(batches, r"density/c/\d+/0/0/0( and \d+ more)?")
    if workers:
        fails(loader, "zarr.json")  # workers start, and open the store, after the kill
    _assert_intact(url, relay, small_local_build)


#: ``crystalgrid verify URL`` in this process, the relay (pid in ``RELAY_PID``) killed once
#: chunk number ``KILL_AT`` has been fetched, before it is decoded.
VERIFY_KILLING_THE_RELAY = """
import os, signal, socket, sys, time
import crystalgrid.store._verify as store
from crystalgrid.cli import main

real, fetched = store.whole_blosc_frame, []

def kill_at(raw):
    fetched.append(len(raw))
    if len(fetched) == int(os.environ["KILL_AT"]):
        os.kill(int(os.environ["RELAY_PID"]), signal.SIGKILL)
        deadline = time.monotonic() + 30  # a bound against hanging
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", int(os.environ["RELAY_PORT"]))).close()
            except OSError:
                break
            time.sleep(0.05)
    return real(raw)

store.whole_blosc_frame = kill_at
main(["verify", sys.argv[1]], prog_name="crystalgrid")
"""


def test_an_endpoint_killed_during_verify_is_one_line(small_local_build, relay):
    """crystalgrid verify, in a process of its own, with the endpoint killed between the fetch
    of the last chunk and its decoding (which reads it again): one line on stderr naming the
    store and the key, exit 2, no chunk called damaged; started again, the store verifies,
    its objects unchanged."""
    import re
    import subprocess
    import sys

    relay.moto.put(str(small_local_build), f"{relay.bucket}/repeated.zarr", recursive=True)
    url = f"s3://{relay.bucket}/repeated.zarr"
    env = {**_cli_env(), "RELAY_PID": str(relay.process.pid), "RELAY_PORT": str(relay.port)}
    env["KILL_AT"] = str(verify(small_local_build).chunks_checked)
    proc = subprocess.run(
        [sys.executable, "-c", VERIFY_KILLING_THE_RELAY, url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    relay.kill()
    assert (proc.returncode, proc.stdout) == (2, ""), (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"crystalgrid: error: {url}: cannot connect to the endpoint")
    assert re.search(r" \(reading \S+/c/[\d/]+\)$", lines[0]), lines[0]
    relay.start()
    _assert_intact(url, relay, small_local_build)


def test_the_model_verbs_take_a_store_by_url(s3_build, tmp_path):
    """`evaluate` (any verb with --data) reads an s3:// store as the dataset verbs do; a URL
    holding no store is one line and exit 2."""
    pytest.importorskip("torch")
    out = tmp_path / "scores.json"
    args = ["evaluate", "baseline-2h-cpu-repeated", "--data", s3_build, "--split", "train"]
    result = CliRunner().invoke(main, [*args, "--limit", "2", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["n_samples"] == 2 and scores["data"]["path"] == s3_build
    missing = f"s3://{BUCKET}/nothing-here.zarr"
    bad = CliRunner().invoke(main, ["evaluate", "baseline-2h-cpu-repeated", "--data", missing])
    assert bad.exit_code == 2
    (line,) = bad.stderr.strip().splitlines()
    assert line.startswith("crystalgrid: error: ") and "nothing-here.zarr" in line
