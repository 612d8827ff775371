"""``crystalgrid build --scheduler``: a real dask.distributed cluster on 127.0.0.1.

The test starts a scheduler and two worker processes (``dask scheduler`` / ``dask worker``
subprocesses, no nanny, so that killing a worker's process kills the worker), builds the
embedded demo collection on it, and compares every array byte for byte with a local build.
A second build loses one worker to SIGKILL in the middle of the grid phase; the scheduler
gives its tasks to the surviving worker and the build completes with identical arrays.

Every wait is bounded, and every process the test starts is killed in a ``finally``. The
scheduler stops by itself after 5 idle minutes and the workers 30 s after losing it, should
the test process itself be killed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr
from click.testing import CliRunner

from crystalgrid.builder import BuildConfig, build
from crystalgrid.cli import main
from crystalgrid.sources import DemoSource
from crystalgrid.store import verify

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
#: Arrays compared byte for byte (numbers) or item for item (strings).
ARRAYS = (
    "density",
    "species",
    "samples/transform",
    "samples/material_id",
    "samples/crystal",
    "samples/split",
    "samples/atom_offset",
    "atoms/position",
    "atoms/number",
    "crystals/material_id",
    "crystals/lattice",
    "crystals/frac",
)
#: The build both tests run: many small blocks (8 crystals each), so a kill lands mid-build.
SAMPLES, BLOCK = 3, 24
CONFIG = BuildConfig(representation="repeated", samples_per_crystal=SAMPLES, block_samples=BLOCK)
CLI_ARGS = ["--repr", "repeated", "--samples", str(SAMPLES), "--block", str(BLOCK), "--quiet"]
START_TIMEOUT = 60.0  # s, for the scheduler and workers to come up
BUILD_TIMEOUT = 120.0  # s, for one build of the demo collection


def _env() -> dict[str, str]:
    """The test's environment, with this checkout importable (workers run the same code)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class Cluster:
    """A scheduler and ``n`` worker processes on 127.0.0.1, started as ``dask`` subprocesses."""

    def __init__(self, folder: Path, n_workers: int = 2) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.address = ""
        self._start(n_workers)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "dask", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            env=_env(),
            start_new_session=True,
        )
        log.close()  # the child holds its own descriptor
        self.procs.append(proc)
        return proc

    def _start(self, n_workers: int) -> None:
        info = self.folder / "scheduler.json"
        self._spawn(
            "scheduler",
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(info),
                "--idle-timeout",
                "300",
            ],
        )
        deadline = time.monotonic() + START_TIMEOUT
        scheduler = None
        while scheduler is None and time.monotonic() < deadline:
            self._check_alive()
            # The scheduler creates the file before it writes it: wait for a whole document.
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                scheduler = json.loads(info.read_text())
            time.sleep(0.05)
        if scheduler is None:
            raise TimeoutError(f"the scheduler did not start in {START_TIMEOUT} s")
        self.address = scheduler["address"]
        assert self.address.startswith("tcp://127.0.0.1:")
        for i in range(n_workers):
            worker = self._spawn(
                f"worker{i}",
                [
                    "worker",
                    self.address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--memory-limit",
                    "0",
                    "--death-timeout",
                    "30",
                    "--name",
                    f"w{i}",
                    "--local-directory",
                    str(self.folder / f"w{i}"),
                ],
            )
            self.workers.append(worker)
        with self.client() as client:
            client.wait_for_workers(n_workers, timeout=START_TIMEOUT)

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                logs = "\n".join(p.read_text()[-2000:] for p in self.folder.glob("*.log"))
                raise RuntimeError(f"a cluster process exited ({proc.returncode}):\n{logs}")

    def client(self):
        from distributed import Client

        return Client(self.address, timeout="20s")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL: not for long
                proc.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path):
    """A fresh scheduler and two workers per test (one test kills a worker)."""
    folder = tmp_path / "cluster"
    folder.mkdir()
    running = Cluster(folder)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def local_build(tmp_path_factory):
    """The reference: the same build with one local (in-process) worker."""
    out = tmp_path_factory.mktemp("local") / "local.zarr"
    build(DemoSource(), out, config=CONFIG, workers=1, quiet=True)
    return out


def _arrays(path: Path) -> dict:
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][...] for name in ARRAYS}


def _assert_identical(a: Path, b: Path) -> None:
    left, right = _arrays(a), _arrays(b)
    for name in ARRAYS:
        x, y = left[name], right[name]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype.kind in "fiub":
            assert x.tobytes() == y.tobytes(), f"{name} differs"
        else:
            assert x.tolist() == y.tolist(), f"{name} differs"


def _blocks(summary: str) -> tuple[int, int]:
    """(computed, total) from the build's summary line "... N/M blocks computed ..."."""
    found = re.search(r"(\d+)/(\d+) blocks computed", summary)
    assert found, summary
    return int(found[1]), int(found[2])


def test_cluster_build_is_byte_identical_to_a_local_build(
    cluster, local_build, tmp_path, monkeypatch
):
    from distributed import get_task_stream

    # A relative --out, from a directory that is not the workers' working directory: the
    # workers must write where the driver means, not under their own cwd.
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cluster.zarr"
    with cluster.client() as client:
        # The worker-side functions resolve, on every worker, to this checkout's modules.
        for module_name, name in (("_block", "_grid_block"), ("_scan", "_scan_shard")):
            module = importlib.import_module(f"crystalgrid.builder.{module_name}")
            files = client.run(getattr, module, "__file__")
            assert len(files) == 2
            assert set(files.values()) == {module.__file__}
            found = client.run(getattr, module, name)
            assert all(f is getattr(module, name) for f in found.values()), name
        with get_task_stream(client) as stream:
            result = CliRunner().invoke(
                main, ["build", *CLI_ARGS, "--scheduler", cluster.address, "--out", out.name]
            )
        assert result.exit_code == 0, result.output
        computed, total = _blocks(result.output)
        assert computed == total > 1
        # The grid tasks ran on both workers (so the store was written by two processes).
        grid_workers = {t["worker"] for t in stream.data if "_grid_block" in str(t["key"])}
        assert len(grid_workers) == 2, grid_workers
    _assert_identical(local_build, out)
    assert verify(out).ok


def test_a_worker_killed_mid_build_changes_nothing(cluster, local_build, tmp_path):
    out = tmp_path / "killed.zarr"
    done = out / "_build" / "done" / "c"
    cmd = [
        sys.executable,
        "-m",
        "crystalgrid",
        "build",
        *CLI_ARGS,
        "--scheduler",
        cluster.address,
        "--out",
        str(out),
    ]
    watcher = cluster.client()  # connected before the build starts: no delay at the kill
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + BUILD_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if done.is_dir() and len(os.listdir(done)) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the build ended before the kill"
        victim = cluster.workers[0]
        address = next(
            a for a, w in watcher.scheduler_info()["workers"].items() if w["name"] == "w0"
        )
        busy = watcher.processing([address])[address]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        n_blocks = zarr.open_group(str(out), mode="r")["_build/done"].shape[0]
        finished = len(os.listdir(done))
        # The victim dies holding grid tasks, which the scheduler must hand to the survivor.
        assert any("_grid_block" in str(key) for key in busy), busy
        assert 3 <= finished < n_blocks, "the kill must land in the middle of the grid phase"
        stdout, stderr = proc.communicate(timeout=BUILD_TIMEOUT)
        remaining = watcher.scheduler_info()["workers"]
    finally:
        watcher.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 0, stderr[-3000:]
    assert "resumed" not in stdout  # one build that went on, not a second run
    computed, total = _blocks(stdout)
    assert computed == total == n_blocks
    assert [w["name"] for w in remaining.values()] == ["w1"]  # the survivor did the rest
    _assert_identical(local_build, out)
    assert verify(out).ok


def _allocator_environ() -> dict[str, str | int | None]:
    return {
        "pid": os.getpid(),
        **{
            name: os.environ.get(name)
            for name in ("MALLOC_TRIM_THRESHOLD_", "OPENBLAS_NUM_THREADS")
        },
    }


def test_local_workers_keep_the_default_allocator(monkeypatch):
    """Local build workers run without Dask's MALLOC_TRIM_THRESHOLD_ (it made every large
    temporary a fresh mmap) and still with one BLAS thread each; one of them runs in this
    process, the others join as they start."""
    from crystalgrid.builder._cluster import dask_client as _client
    from crystalgrid.builder._cluster import n_workers as _n_workers

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with _client(3, None) as client:
        assert _n_workers(client) == 3  # planned, before every worker has joined
        client.wait_for_workers(3, timeout=60)
        seen = list(client.run(_allocator_environ).values())
    assert sum(env["pid"] == os.getpid() for env in seen) == 1
    others = [env for env in seen if env["pid"] != os.getpid()]
    assert len(others) == 2
    assert all(env["MALLOC_TRIM_THRESHOLD_"] is None for env in others)
    assert all(env["OPENBLAS_NUM_THREADS"] == "1" for env in others)


def test_an_unguarded_script_builds_on_the_workers_that_start(json_source, tmp_path):
    """Without the ``__main__`` guard, spawned workers fail to start (they rerun the script);
    the build goes on without them and says so in one line."""
    out = tmp_path / "unguarded.zarr"
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from crystalgrid.builder import build\n"
        f"build({str(json_source)!r}, {str(out)!r}, workers=2, quiet=True)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=_env()
    )
    assert done.returncode == 0, done.stderr
    assert "1 of 2 local workers failed to start" in done.stderr
    assert "tornado.application" not in done.stderr
    assert verify(out).ok
