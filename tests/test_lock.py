"""One writer per store: a second build is refused, a dead build's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from crystalgrid.builder import BuildConfig, build
from crystalgrid.cli import main
from crystalgrid.errors import CrystalgridError
from crystalgrid.lock import STALE_AFTER_S, lock_path, store_lock

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
    with pytest.raises(CrystalgridError, match=f"process {os.getpid()} on"):
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
        with pytest.raises(CrystalgridError, match="on elsewhere"), store_lock(str(out)):
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
