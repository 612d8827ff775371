"""Reading grid rows by decoding raw chunks in place: equal to zarr's slicing, safe on damage."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from crystalgrid.errors import IntegrityError
from crystalgrid.store import ChunkReader, compressor


@pytest.fixture
def grids(tmp_path):
    """A (50, 4, 4, 4) float32 and a uint8 array in chunks of 8 rows (the last one partial)."""
    rng = np.random.default_rng(0)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    data = {
        "density": rng.random((50, 4, 4, 4), dtype=np.float32),
        "species": rng.integers(0, 90, (50, 4, 4, 4), dtype=np.uint8),
    }
    for name, values in data.items():
        array = group.create_array(
            name,
            shape=values.shape,
            chunks=(8, 4, 4, 4),
            dtype=values.dtype,
            compressors=compressor("lz4"),
        )
        array[...] = values
    return tmp_path / "g.zarr", group, data


@pytest.mark.parametrize("rows", [(0, 8), (0, 50), (3, 5), (7, 9), (40, 50), (45, 50), (49, 60)])
def test_rows_equal_zarr_slicing(grids, rows):
    location, group, data = grids
    for name, values in data.items():
        reader = ChunkReader(group[name], str(location))
        assert reader.direct
        got = reader.read(*rows)
        assert got.dtype == values.dtype
        np.testing.assert_array_equal(got, values[slice(*rows)])
        np.testing.assert_array_equal(got, group[name][slice(*rows)])


def test_a_missing_chunk_reads_as_the_fill_value(grids):
    location, group, data = grids
    (location / "density" / "c" / "1" / "0" / "0" / "0").unlink()
    rows = ChunkReader(group["density"], str(location)).read(6, 18)
    np.testing.assert_array_equal(rows[:2], data["density"][6:8])
    assert not rows[2:10].any()
    np.testing.assert_array_equal(rows[10:], data["density"][16:18])


def test_a_truncated_chunk_is_one_line_without_decoding_it(grids):
    location, group, _ = grids
    chunk = location / "density" / "c" / "1" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:40])
    reader = ChunkReader(group["density"], str(location))
    with pytest.raises(IntegrityError, match="chunk 1 of density is truncated"):
        reader.read(0, 16)
    np.testing.assert_array_equal(reader.read(16, 24), group["density"][16:24])


def test_a_corrupted_chunk_is_one_line(grids):
    location, group, _ = grids
    chunk = location / "species" / "c" / "2" / "0" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[4:8] = (10**6).to_bytes(4, "little")  # the header's decoded size: not the chunk's
    chunk.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="a chunk of species does not decode"):
        ChunkReader(group["species"], str(location)).read(16, 24)


def test_other_encodings_are_read_through_zarr(tmp_path):
    group = zarr.open_group(str(tmp_path / "z.zarr"), mode="w")
    values = np.arange(60, dtype=np.float32).reshape(15, 2, 2)
    array = group.create_array("x", shape=values.shape, chunks=(4, 2, 2), dtype="float32")
    array[...] = values  # zarr's default codecs (zstd), not Blosc
    reader = ChunkReader(array, str(tmp_path))
    assert not reader.direct
    np.testing.assert_array_equal(reader.read(3, 14), values[3:14])


@pytest.mark.parametrize("store_kind", ["local", "memory"])
def test_the_writer_writes_the_bytes_zarr_writes(tmp_path, store_kind):
    from crystalgrid.store import ChunkWriter

    rng = np.random.default_rng(1)
    values = {
        "density": rng.random((50, 4, 4, 4), dtype=np.float32),
        "species": rng.integers(0, 5, (50, 4, 4, 4), dtype=np.uint8),
    }
    stores = {}
    for how in ("zarr", "writer"):
        if store_kind == "local":
            store = zarr.storage.LocalStore(str(tmp_path / f"{how}.zarr"))
        else:
            store = zarr.storage.MemoryStore()
        group = zarr.open_group(store, mode="w", path="deep/group")
        for name, data in values.items():
            codec = compressor("lz4" if name == "density" else "zstd")
            array = group.create_array(
                name, shape=data.shape, chunks=(8, 4, 4, 4), dtype=data.dtype, compressors=codec
            )
            if how == "zarr":
                array[...] = data
            else:
                writer = ChunkWriter(array, "test")
                assert writer.direct
                writer.write(0, data[:16])
                writer.write(16, data[16:48])
                writer.write(48, data[48:])  # the last chunk, partial: padded as zarr pads it
                writer.write(3, data[3:5])  # not whole chunks: through zarr
            np.testing.assert_array_equal(array[...], data)
        stores[how] = store
    for name in values:
        for number in range(7):
            key = f"deep/group/{name}/c/{number}/0/0/0"
            got = [
                sync(stores[how].get(key, prototype=default_buffer_prototype())).to_bytes()
                for how in ("zarr", "writer")
            ]
            assert got[0] == got[1], (name, number)
    if store_kind == "local":  # no partial files left behind
        assert not list((tmp_path / "writer.zarr").rglob("*.partial"))
