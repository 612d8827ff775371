"""One writer per store: a second build is refused, a dead build's lock is taken over, and a
build whose lock was taken over or cannot be refreshed stops."""

from __future__ import annotations

import errno
import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr
from click.testing import CliRunner

from crystalgrid.builder import BuildConfig, build
from crystalgrid.cli import main
from crystalgrid.errors import ConfigError, LockedError
from crystalgrid.lock import STALE_AFTER_S, intervals, lock_path, store_lock
from crystalgrid.store import verify

CONFIG = BuildConfig(samples_per_crystal=1, block_samples=24)


def _plant(location, **holder) -> None:
    now = time.time()
    record = {"host": socket.gethostname(), "pid": 0, "started": now, "heartbeat": now}
    record.update(token="other", **holder)
    with open(lock_path(str(location)), "w") as fh:
        json.dump(record, fh)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_build_leaves_no_lock(json_source, tmp_path):
    out = tmp_path / "s.zarr"
    build(json_source, out, config=CONFIG, quiet=True)
    assert not (tmp_path / "s.zarr.lock").exists()


def test_a_running_build_is_named_and_the_second_refused(json_source, tmp_path):
    out = tmp_path / "s.zarr"
    _plant(out, pid=os.getpid())  # this very process: alive
    with pytest.raises(LockedError, match=f"process {os.getpid()} on"):
        build(json_source, out, config=CONFIG, quiet=True)
    assert not out.exists()  # refused before writing anything
    result = CliRunner().invoke(main, ["build", "--source", str(json_source), "--out", str(out)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "being built by another build" in result.output


def test_a_dead_builds_lock_is_taken_over(json_source, tmp_path):
    out = tmp_path / "s.zarr"
    _plant(out, pid=_dead_pid())
    build(json_source, out, config=CONFIG, quiet=True)
    assert not (tmp_path / "s.zarr.lock").exists()


@pytest.mark.parametrize(("age", "refused"), [(10.0, True), (STALE_AFTER_S + 60, False)])
def test_another_hosts_lock_goes_stale_without_heartbeat(tmp_path, age, refused):
    out = tmp_path / "s.zarr"
    _plant(out, host="elsewhere", pid=1, heartbeat=time.time() - age)
    if refused:
        with pytest.raises(LockedError, match="on elsewhere"), store_lock(str(out)):
            pass
    else:
        with store_lock(str(out)):
            held = json.loads((tmp_path / "s.zarr.lock").read_text())
            assert held["host"] == socket.gethostname() and held["token"] != "other"
        assert not (tmp_path / "s.zarr.lock").exists()


def test_an_unreadable_lock_is_stale(tmp_path):
    out = tmp_path / "s.zarr"
    (tmp_path / "s.zarr.lock").write_text("{not json")
    with store_lock(str(out)):
        pass
    assert not (tmp_path / "s.zarr.lock").exists()


def _holder(location) -> dict | None:
    try:
        return json.loads(Path(lock_path(str(location))).read_text())
    except FileNotFoundError:
        return None


def _until(condition, what: str, limit_s: float = 120.0) -> None:
    """Poll ``condition`` until it holds (a bound against hanging, not a timing)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_a_paused_build_whose_lock_was_taken_over_stops_in_one_line(tmp_path):
    """Build A is paused (SIGSTOP) in the middle of its blocks until its heartbeat is stale;
    build B takes the lock over; A resumes: A stops in one line naming B, B completes, the
    store verifies."""
    out = tmp_path / "s.zarr"
    env = dict(os.environ, CRYSTALGRID_LOCK_HEARTBEAT="0.1", CRYSTALGRID_LOCK_STALE="1")
    cmd = [sys.executable, "-m", "crystalgrid", "build", "--out", str(out), "--samples", "1"]
    cmd += ["--block", "8", "--chunk", "8", "--workers", "1", "--quiet"]
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    done = out / "_build" / "done" / "c"
    try:
        _until(lambda: done.is_dir() and len(os.listdir(done)) >= 2, "two blocks done")
        first.send_signal(signal.SIGSTOP)
        n_blocks = zarr.open_group(str(out))["_build/done"].shape[0]
        assert len(os.listdir(done)) < n_blocks, "the pause must land in the middle of the build"
        _until(lambda: time.time() - _holder(out)["heartbeat"] > 1.5, "A's heartbeat stale")
        second = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _until(lambda: (_holder(out) or {}).get("pid") == second.pid, "B holds the lock")
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert f"another build took this build's lock over (process {second.pid} on" in err
    assert "this build stopped and writes no more" in err
    _, err_b = second.communicate(timeout=120)
    assert second.returncode == 0, err_b
    assert b"taking over the lock" in err_b and b"no heartbeat for" in err_b
    assert not Path(lock_path(str(out))).exists()
    assert verify(out).ok
    assert zarr.open_group(str(out))["_build/done"][:].all()


def test_a_lock_taken_over_is_never_overwritten_nor_removed(tmp_path):
    out = tmp_path / "s.zarr"
    with store_lock(str(out), heartbeat_s=0.02, stale_after_s=1) as held:
        held.check(read=True)
        _plant(out, pid=4242, host="elsewhere")  # another build took it over
        with pytest.raises(LockedError, match="process 4242 on elsewhere"):
            _until(lambda: held.check() is not None, "the heartbeat notices")
        with pytest.raises(LockedError, match="took this build's lock over"):
            held.guard.check()
    holder = _holder(out)
    assert holder is not None and holder["pid"] == 4242 and holder["token"] == "other"


def test_a_removed_lock_stops_the_build(tmp_path):
    out = tmp_path / "s.zarr"
    with store_lock(str(out), heartbeat_s=0.02, stale_after_s=1) as held:
        os.remove(lock_path(str(out)))
        with pytest.raises(LockedError, match="was removed while it ran"):
            _until(lambda: held.check() is not None, "the heartbeat notices")
    assert _holder(out) is None  # not written again


def test_a_heartbeat_that_cannot_be_written_is_logged_then_stops_the_build(
    tmp_path, monkeypatch, caplog
):
    out = tmp_path / "s.zarr"
    lock_module = importlib.import_module("crystalgrid.lock")
    real = lock_module._write

    def disk_fails(fs, path, record, *, exclusive):
        if not exclusive:  # the heartbeats, not the first write
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fs, path, record, exclusive=exclusive)

    monkeypatch.setattr(lock_module, "_write", disk_fails)
    with (
        store_lock(str(out), heartbeat_s=0.02, stale_after_s=1) as held,
        pytest.raises(LockedError, match="could not be refreshed 3 times in a row"),
    ):
        _until(lambda: held.check() is not None, "three failed heartbeats")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == lock_module.FAILED_BEATS_TO_STOP
    assert all("cannot refresh the build lock" in w and "Input/output error" in w for w in warnings)
    assert _holder(out) is None  # still its own: removed on the way out


def test_lock_intervals_from_the_environment(monkeypatch):
    monkeypatch.setenv("CRYSTALGRID_LOCK_HEARTBEAT", "2")
    monkeypatch.setenv("CRYSTALGRID_LOCK_STALE", "5")
    assert intervals() == (2.0, 5.0)
    assert intervals(heartbeat_s=1, stale_after_s=3) == (1.0, 3.0)
    monkeypatch.setenv("CRYSTALGRID_LOCK_STALE", "3")
    with pytest.raises(ConfigError, match="at least two heartbeats"):
        intervals()
    monkeypatch.setenv("CRYSTALGRID_LOCK_HEARTBEAT", "soon")
    with pytest.raises(ConfigError, match="CRYSTALGRID_LOCK_HEARTBEAT must be a number"):
        intervals()
