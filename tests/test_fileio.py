"""Atomic writes and the exclusive flock of crystalgrid.fileio."""

from __future__ import annotations

from pathlib import Path

import pytest

from crystalgrid.errors import LockedError
from crystalgrid.fileio import TMP_SUFFIX, hold_flock, open_atomic, write_atomic


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX))


@pytest.mark.parametrize("durable", [False, True])
def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path, durable):
    target = tmp_path / "deep" / "folder" / "file.bin"
    assert write_atomic(target, b"first", durable=durable)
    assert write_atomic(target, memoryview(b"second"), durable=durable)
    assert target.read_bytes() == b"second"
    assert _leftovers(target.parent) == []


def test_write_atomic_exclusive_never_overwrites(tmp_path):
    target = tmp_path / "claim"
    assert write_atomic(target, b"mine", exclusive=True)
    assert not write_atomic(target, b"theirs", exclusive=True)
    assert target.read_bytes() == b"mine"
    assert _leftovers(tmp_path) == []


def test_write_atomic_failure_leaves_the_old_file(tmp_path):
    target = tmp_path / "file"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "text is not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("durable", [False, True])
def test_open_atomic_streams_chunks_and_renames_at_the_end(tmp_path, durable):
    target = tmp_path / "stream.bin"
    target.write_bytes(b"old")
    with open_atomic(target, durable=durable) as fh:
        for i in range(100):
            fh.write(bytes([i]) * 1000)
        # Nothing is visible until the block ends.
        assert target.read_bytes() == b"old"
        assert len(_leftovers(tmp_path)) == 1
    assert target.read_bytes() == b"".join(bytes([i]) * 1000 for i in range(100))
    assert _leftovers(tmp_path) == []


def test_open_atomic_error_in_the_block_keeps_the_old_file(tmp_path):
    target = tmp_path / "stream.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer died"), open_atomic(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_open_atomic_makes_a_new_file_and_its_folders(tmp_path):
    target = tmp_path / "a" / "b" / "new.bin"
    with open_atomic(target) as fh:
        fh.write(b"x")
    assert target.read_bytes() == b"x"


def test_hold_flock_excludes_a_second_holder(tmp_path):
    lock = tmp_path / "lock"
    with (
        hold_flock(lock, "busy: another process holds it"),
        pytest.raises(LockedError, match="busy"),
        hold_flock(lock, "busy: second"),
    ):
        pass
    # Released when the block ends.
    with hold_flock(lock, "busy"):
        pass
