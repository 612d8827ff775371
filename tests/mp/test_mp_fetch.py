"""``crystalgrid fetch`` with the real mp-api client against a local fake Materials Project.

The server (``mp_server.py``) runs on 127.0.0.1 and serves real structures from
``../shared/data/mp_binaries``; mp-api finds it through ``MP_API_ENDPOINT``. No test here
reaches the internet, except ``test_live_fetch``, which runs only when ``MP_API_KEY`` is set.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("mp_api")

from click.testing import CliRunner

from crystalgrid import mp
from crystalgrid.cli import main
from crystalgrid.errors import BadInputError, IntegrityError
from crystalgrid.mp import _client as mp_client
from crystalgrid.mp import _keys as mp_keys
from crystalgrid.sources.collection import open_collection

if __package__:  # tests/sources is a package in some layouts, a rootdir-relative path in others
    from .mp_server import DB_VERSION, GNOME_BATCH_ID, FakeMaterialsProject, load_documents, select
else:
    from mp_server import DB_VERSION, GNOME_BATCH_ID, FakeMaterialsProject, load_documents, select

KEY = "fakeKey0" * 4  # 32 characters, accepted by the fake server only
REPO = Path(__file__).resolve().parents[2]
LIVE_KEY = os.environ.get("MP_API_KEY")  # read before any fixture replaces it


@pytest.fixture(scope="module")
def mp_docs(shared_data: Path) -> list[dict]:
    return load_documents(shared_data / "mp_binaries" / "mp_binaries.json.gz")


@pytest.fixture
def server(mp_docs: list[dict], monkeypatch: pytest.MonkeyPatch):
    """The fake server, with MP_API_ENDPOINT and MP_API_KEY pointing mp-api at it."""
    fake = FakeMaterialsProject(mp_docs, api_key=KEY).start()
    monkeypatch.setenv("MP_API_ENDPOINT", fake.url)
    monkeypatch.setenv("MP_API_KEY", KEY)
    monkeypatch.delenv("PMG_MAPI_KEY", raising=False)
    # Short waits between retries, so that fault tests stay fast.
    monkeypatch.setattr(mp_client, "DEFAULT_BACKOFF_S", 0.01)
    monkeypatch.setattr(mp_client, "DEFAULT_RETRIES", 2)
    yield fake
    fake.stop()


def expected(docs: list[dict], **params: str) -> list[dict]:
    """What the query crystalgrid sends should return, in the fetch's order."""
    base = {"nsites_min": "1", "batch_id_not_eq": GNOME_BATCH_ID, "_sort_fields": "material_id"}
    return select(docs, {**base, **params})


def ids_of(path: Path) -> list[str]:
    return [r.material_id for r in open_collection(path, allow_incomplete=True).records()]


def assert_key_absent(root: Path, *texts: str) -> None:
    """The key is in no file under ``root`` (gzip pages decompressed) and in none of ``texts``."""
    for text in texts:
        assert KEY not in text
    for file in root.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            if file.name.endswith(".gz"):
                data = gzip.decompress(data)
            assert KEY.encode() not in data, file


def run_cli(*args: str):
    result = CliRunner().invoke(main, ["fetch", *args], catch_exceptions=False)
    return result


def test_full_fetch_equals_the_source(server, mp_docs, tmp_path: Path) -> None:
    out = tmp_path / "mp"
    report = mp.fetch(out, page_size=500, quiet=True)

    want = expected(mp_docs)
    assert report.complete and not report.failed
    assert report.count == len(want) == 3207 - len([d for d in mp_docs if d["batch_id"] != "mp"])
    assert report.pages == report.pages_fetched == 7
    source = open_collection(out)
    records = list(source.records())
    assert [r.material_id for r in records] == [d["material_id"] for d in want]
    by_id = {d["material_id"]: d for d in mp_docs}
    for record in records:
        doc = by_id[record.material_id]
        assert record.kind == "dict"
        assert record.payload == doc["structure"]  # exactly the source's structure
        assert record.properties["energy_above_hull"] == doc["energy_above_hull"]
        assert record.properties["band_gap"] == doc["band_gap"]
        assert record.properties["spacegroup_number"] == doc["symmetry"]["number"]
    from pymatgen.core import Structure

    first = Structure.from_dict(records[0].payload)
    assert len(first) == by_id[records[0].material_id]["nsites"]

    info = source.provenance()
    assert info["licence"] == "CC-BY-4.0"
    assert "Jain et al." in info["citation"]
    assert info["database_version"] == DB_VERSION
    assert info["mp_api_version"] and info["crystalgrid_version"]
    assert info["count"] == len(want) and "pages" not in info
    assert info["query"]["criteria"]["batch_id_not_eq"] == GNOME_BATCH_ID
    # Every request carried a server-side filter (no bulk-download path) and only _fields asked.
    for request in server.summary_requests():
        assert any(not k.startswith("_") for k in request["params"])
    assert_key_absent(out)


def test_same_command_again_downloads_nothing(server, tmp_path: Path) -> None:
    out = tmp_path / "mp"
    first = mp.fetch(out, max_sites=4, page_size=200, quiet=True)
    fingerprint = open_collection(out).fingerprint()
    before = len(server.summary_requests())
    again = mp.fetch(out, max_sites=4, page_size=200, quiet=True)
    assert again.complete and again.pages_fetched == 0 and again.pages_reused == first.pages
    assert len(server.summary_requests()) == before  # complete: not a single request
    assert open_collection(out).fingerprint() == fingerprint

    # A page damaged on disk is noticed and fetched again, and only that page.
    page = out / "pages" / "page-000001.json.gz"
    page.write_bytes(b"damaged")
    repaired = mp.fetch(out, max_sites=4, page_size=200, quiet=True)
    assert repaired.complete and repaired.pages_fetched == 1
    assert server.summary_requests()[-1]["params"]["_skip"] == "200"
    assert open_collection(out).fingerprint() == fingerprint


def test_cli_limit(server, mp_docs, tmp_path: Path) -> None:
    out = tmp_path / "small"
    result = run_cli("--out", str(out), "--limit", "30", "--page-size", "20")
    assert result.exit_code == 0, result.output
    assert "30 materials" in result.stdout and "CC-BY 4.0" in result.stdout
    assert "doc/s" in result.stderr  # the progress bar: documents, rate, time left
    assert ids_of(out) == [d["material_id"] for d in expected(mp_docs)[:30]]
    pages = sorted(p.name for p in (out / "pages").iterdir())
    assert pages == ["page-000000.json.gz", "page-000001.json.gz"]
    assert_key_absent(out, result.stdout, result.stderr)


def test_filters_are_server_side(server, mp_docs, tmp_path: Path) -> None:
    report = mp.fetch(
        tmp_path / "f", max_sites=4, elements="o", max_ehull=0.1, page_size=50, quiet=True
    )
    want = expected(mp_docs, nsites_max="4", elements="O", energy_above_hull_max="0.1")
    assert 0 < report.count == len(want) < 400
    assert ids_of(tmp_path / "f") == [d["material_id"] for d in want]
    params = server.summary_requests()[-1]["params"]
    assert params["nsites_max"] == "4" and params["elements"] == "O"
    assert params["energy_above_hull_max"] == "0.1"


def test_gnome_only_on_request(server, mp_docs, tmp_path: Path) -> None:
    mp.fetch(tmp_path / "with", max_sites=3, include_gnome=True, page_size=1000, quiet=True)
    mp.fetch(tmp_path / "without", max_sites=3, page_size=1000, quiet=True)
    gnome = {d["material_id"] for d in mp_docs if d["batch_id"] == GNOME_BATCH_ID}
    assert gnome & set(ids_of(tmp_path / "with"))
    assert not gnome & set(ids_of(tmp_path / "without"))


def test_ids_file(server, mp_docs, tmp_path: Path) -> None:
    chosen = [d["material_id"] for d in mp_docs[100:160:3]]
    lines = ["material_id,target", *(f"{i},1.0" for i in chosen), "mp-999999999,2.0", chosen[0]]
    ids_file = tmp_path / "ids.csv"
    ids_file.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ids"
    result = run_cli("--out", str(out), "--ids", str(ids_file), "--page-size", "8")
    assert result.exit_code == 0, result.output
    gnome = {d["material_id"] for d in mp_docs if d["batch_id"] == GNOME_BATCH_ID}
    assert ids_of(out) == [i for i in chosen if i not in gnome]  # the file's order, no repeats
    assert "mp-999999999" in result.stderr  # reported as not returned
    manifest = json.loads((out / "collection.json").read_text())
    assert manifest["query"]["ids"]["count"] == len(chosen) + 1
    assert manifest["expected_pages"] == 3


def test_rate_limited_then_served(server, mp_docs, tmp_path: Path) -> None:
    server.faults.next_statuses = [429, 503]  # two failures: within the 2 retries
    report = mp.fetch(tmp_path / "r", limit=40, page_size=20, quiet=True)
    assert report.complete and report.count == 40
    statuses = [r["status"] for r in server.summary_requests()]
    assert statuses[:3] == [429, 503, 200]


def test_server_error_500_is_retried(server, tmp_path: Path) -> None:
    server.faults.next_statuses = [0, 500]  # the count is served, the first page gets a 500
    report = mp.fetch(tmp_path / "r", limit=20, page_size=20, quiet=True)
    assert report.complete
    assert [r["status"] for r in server.summary_requests()] == [200, 500, 200]


def test_page_that_keeps_failing(server, mp_docs, tmp_path: Path) -> None:
    out = tmp_path / "p"
    server.faults.skip_statuses = {40: 500}  # page 2 of 5
    result = run_cli("--out", str(out), "--limit", "100", "--page-size", "20", "--quiet")
    assert result.exit_code == 1
    assert "page 2 failed: HTTP 500" in result.stderr and "Traceback" not in result.output
    assert "1 of 5 pages could not be fetched" in result.stderr
    failing = [r for r in server.summary_requests() if r["params"].get("_skip") == "40"]
    assert len(failing) == 1 + mp_client.DEFAULT_RETRIES  # retried, bounded
    with pytest.raises(BadInputError, match="incomplete"):
        open_collection(out)
    partial = ids_of(out)
    want = [d["material_id"] for d in expected(mp_docs)[:100]]
    assert partial == want[:40] + want[60:]

    server.faults.skip_statuses = {}
    result = run_cli("--out", str(out), "--limit", "100", "--page-size", "20", "--quiet")
    assert result.exit_code == 0, result.output
    assert ids_of(out) == want
    assert [r["params"].get("_skip") for r in server.summary_requests()[-2:]] == [None, "40"]


def test_kill_9_then_resume_equals_uninterrupted(server, tmp_path: Path) -> None:
    """A CLI process killed with SIGKILL mid-fetch; the same command finishes the job."""
    out, whole = tmp_path / "killed", tmp_path / "whole"
    args = ["--limit", "300", "--page-size", "20", "--quiet"]
    server.faults.delay_s = 0.3  # 15 pages x 0.3 s: slow enough to kill it in the middle
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "crystalgrid", "fetch", "--out", str(out), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    manifest_file = out / "collection.json"
    deadline = time.monotonic() + 60
    pages_at_kill = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest_file.exists():
                pages_at_kill = len(json.loads(manifest_file.read_text())["pages"])
                if pages_at_kill >= 3:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the fetch ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    manifest = json.loads(manifest_file.read_text())
    assert 3 <= len(manifest["pages"]) < 15 and manifest["complete"] is False

    server.faults.delay_s = 0.0
    result = run_cli("--out", str(out), *[a for a in args if a != "--quiet"])
    assert result.exit_code == 0, result.output
    kept = len(manifest["pages"])
    assert f"15 pages, {15 - kept} fetched now, {kept} already there" in result.stdout

    assert run_cli("--out", str(whole), *args).exit_code == 0
    killed, uninterrupted = open_collection(out), open_collection(whole)
    ids = [r.material_id for r in killed.records()]
    assert len(ids) == len(set(ids)) == 300
    assert ids == [r.material_id for r in uninterrupted.records()]
    assert killed.fingerprint() == uninterrupted.fingerprint()  # byte-identical pages
    assert not list((out / "pages").glob(".*.tmp"))
    assert_key_absent(out, stdout.decode(), stderr.decode(), result.output)


def test_a_full_disk_during_the_fetch_is_one_line_and_resumes(
    server, tmp_path: Path, monkeypatch
) -> None:
    """The disk fills up (ENOSPC) after 4 pages: one line naming the file and the cause, exit
    2; the pages written are kept, and with space again the same command fetches the rest,
    to the collection of an uninterrupted fetch."""
    import errno

    from crystalgrid import fileio

    out, whole = tmp_path / "full", tmp_path / "whole"
    args = ["--limit", "200", "--page-size", "20", "--quiet"]
    real_open = open
    pages = {"n": 0}

    def disk_fills_up(path, mode="r", *rest, **options):
        if "w" in mode and "page-" in str(path):
            pages["n"] += 1
            if pages["n"] > 4:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, mode, *rest, **options)

    with monkeypatch.context() as disk:
        disk.setattr(fileio, "open", disk_fills_up, raising=False)
        result = CliRunner().invoke(main, ["fetch", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"crystalgrid: error: cannot write {out / 'pages'}")
    assert line.endswith("No space left on device")
    manifest = json.loads((out / "collection.json").read_text())
    assert len(manifest["pages"]) == 4 and manifest["complete"] is False
    assert not list((out / "pages").glob(".*.tmp"))

    result = run_cli("--out", str(out), *[a for a in args if a != "--quiet"])
    assert result.exit_code == 0, result.output
    assert "10 pages, 6 fetched now, 4 already there" in result.stdout
    assert run_cli("--out", str(whole), *args).exit_code == 0
    resumed, uninterrupted = open_collection(out), open_collection(whole)
    assert [r.material_id for r in resumed.records()] == [
        r.material_id for r in uninterrupted.records()
    ]
    assert resumed.fingerprint() == uninterrupted.fingerprint()


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key(server, tmp_path: Path, status: int) -> None:
    server.faults.reject_key, server.faults.reject_status = True, status
    result = run_cli("--out", str(tmp_path / "k"))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert "refused the API key" in result.stderr and f"HTTP {status}" in result.stderr
    assert_key_absent(tmp_path, result.output)


def test_key_the_server_does_not_know(server, tmp_path: Path) -> None:
    other = "Z" * 32
    result = run_cli("--out", str(tmp_path / "k"), "--api-key", other)
    assert result.exit_code == 2 and "refused the API key" in result.stderr
    assert other not in result.output


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "no Materials Project API key"), ("abc123", "malformed"), ("x" * 33, "malformed")],
)
def test_missing_or_malformed_key(monkeypatch, tmp_path: Path, value: str, message: str) -> None:
    monkeypatch.setenv("MP_API_KEY", value)
    monkeypatch.delenv("PMG_MAPI_KEY", raising=False)
    monkeypatch.setattr(mp_keys, "_pmgrc_key", lambda: None)
    result = run_cli("--out", str(tmp_path / "k"))
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "k").exists()
    if value:
        assert value not in result.stderr


def test_server_down(monkeypatch, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MP_API_ENDPOINT", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("MP_API_KEY", KEY)
    result = run_cli("--out", str(tmp_path / "d"))
    assert result.exit_code == 2
    assert "cannot reach the Materials Project API" in result.stderr
    assert "connection refused" in result.stderr and result.stderr.count("\n") == 1
    assert KEY not in result.output


def test_resume_refuses_another_query(server, tmp_path: Path) -> None:
    out = tmp_path / "q"
    mp.fetch(out, limit=10, quiet=True)
    with pytest.raises(BadInputError, match=r"different query \(differs in: criteria"):
        mp.fetch(out, limit=10, max_sites=4, quiet=True)
    with pytest.raises(BadInputError, match="differs in: limit"):
        mp.fetch(out, limit=20, quiet=True)


def test_resume_refuses_another_database(server, mp_docs, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "db"
    server.faults.skip_statuses = {20: 500}
    assert not mp.fetch(out, limit=40, page_size=20, quiet=True).complete
    newer = FakeMaterialsProject(mp_docs, api_key=KEY, db_version="2099.01.01").start()
    try:
        monkeypatch.setenv("MP_API_ENDPOINT", newer.url)
        with pytest.raises(IntegrityError, match=r"database 2025\.09\.25, the server now serves"):
            mp.fetch(out, limit=40, page_size=20, quiet=True)
    finally:
        newer.stop()
    # Same version, but the query now matches fewer materials: the pages would shift too.
    shrunk = FakeMaterialsProject(mp_docs[:3000], api_key=KEY).start()
    try:
        monkeypatch.setenv("MP_API_ENDPOINT", shrunk.url)
        with pytest.raises(IntegrityError, match="matched 3127 materials, it now matches"):
            mp.fetch(out, limit=40, page_size=20, quiet=True)
    finally:
        shrunk.stop()


def test_refuses_a_directory_with_other_things(server, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("--out", str(tmp_path), "--limit", "5")
    assert result.exit_code == 2 and "not empty" in result.stderr
    assert not (tmp_path / "collection.json").exists()


def test_ids_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("mp-1\nmp-2\nnot an id\n")
    with pytest.raises(BadInputError, match=r"bad.txt:3: 'not'"):
        mp.read_ids(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(BadInputError, match="holds no material ids"):
        mp.read_ids(empty)
    ok = tmp_path / "ok.txt"
    ok.write_text("mp-149\n\nmp-13 # iron\nmp-149\n")
    assert mp.read_ids(ok) == ["mp-149", "mp-13"]


@pytest.mark.live
@pytest.mark.skipif(not LIVE_KEY, reason="MP_API_KEY is not set: no live Materials Project test")
def test_live_fetch(tmp_path: Path, monkeypatch) -> None:
    """A few real structures from the real service (runs only with MP_API_KEY)."""
    monkeypatch.setenv("MP_API_KEY", LIVE_KEY or "")
    out = tmp_path / "live"
    report = mp.fetch(out, max_sites=2, elements="Si", limit=3, page_size=3, quiet=True)
    assert report.complete and 1 <= report.count <= 3
    source = open_collection(out)
    from crystalgrid.sources.base import parse_record

    for record in source.records():
        assert record.material_id.startswith("mp-")
        assert len(parse_record(record)) <= 2
    assert source.provenance()["database_version"]
    assert_key_absent(out)


def test_a_stalled_endpoint_is_a_bounded_one_line_error(tmp_path: Path) -> None:
    """A server that accepts connections and never answers: exit 2 with one line, no hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_say_nothing() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    env = {
        **os.environ,
        "MP_API_ENDPOINT": f"http://127.0.0.1:{port}/",
        "MP_API_KEY": KEY,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    args = ["fetch", "--out", str(tmp_path / "c"), "--limit", "3", "--timeout", "0.5"]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "crystalgrid", *args, "--retries", "1", "-q"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,  # a hang fails the test here
            cwd=tmp_path,
        )
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "did not answer (2 tries" in lines[0]
    assert KEY not in proc.stderr


def test_a_stall_during_the_download_stops_then_resumes(server, mp_docs, tmp_path: Path) -> None:
    out = tmp_path / "c"
    args = ["--out", str(out), "--limit", "40", "--page-size", "10", "--timeout", "0.5"]
    server.faults.delay_s = 3.0
    server.faults.delay_from = 3  # the count and two pages, then every answer stalls
    first = run_cli(*args, "--retries", "1")
    assert first.exit_code == 1  # incomplete: the pages before the stall are kept
    assert "timed out" in first.output
    kept = ids_of(out)
    assert 0 < len(kept) < 40  # the pages before the stall are saved
    server.faults.delay_s = 0.0
    second = run_cli(*args, "-q")
    assert second.exit_code == 0, second.output
    assert ids_of(out) == [d["material_id"] for d in expected(mp_docs)][:40]
