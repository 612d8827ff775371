"""The store format: its schema, the arrays a build writes, and verification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from crystalgrid.builder import BuildConfig, build
from crystalgrid.cli import main
from crystalgrid.store import SCHEMA, schema_table
from crystalgrid.store._schema import BLOCK_ARRAYS, array_schema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "store-format.md"


@pytest.fixture
def small_store(small_build):
    return small_build("single")


def _arrays(group: zarr.Group, prefix: str = "") -> dict[str, zarr.Array]:
    found = {}
    for name, node in group.members():
        if isinstance(node, zarr.Group):
            found.update(_arrays(node, f"{prefix}{name}/"))
        else:
            found[f"{prefix}{name}"] = node
    return found


def test_the_format_page_shows_the_schema():
    if not DOCS.exists():
        pytest.skip("docs/ is not beside the tests")
    assert schema_table() in DOCS.read_text(encoding="utf-8")


def test_a_build_writes_exactly_the_schema(small_store):
    group = zarr.open_group(str(small_store), mode="r")
    arrays = _arrays(group)
    data = {p: a for p, a in arrays.items() if not p.startswith(("checksums/", "_build/"))}
    assert {array_schema(p).path for p in data} == {a.path for a in SCHEMA}
    for path, array in data.items():
        entry = array_schema(path)
        if entry.dtype == "str":
            assert array.dtype.kind in "OTU" or str(array.dtype).startswith("StringDType")
        elif entry.dtype == "density":
            assert array.dtype == np.float32
        else:
            assert array.dtype == np.dtype(entry.dtype), path
        assert array.shape[1:] == (entry.tail or array.shape[1:]), path
        if isinstance(entry.chunk, int):  # the schema's, or the whole array when shorter
            assert array.chunks[0] in (entry.chunk, max(1, array.shape[0])), path
    # Every array is checksummed: the block ones as written, the others at the end.
    checksummed = {p.removeprefix("checksums/") for p in arrays if p.startswith("checksums/")}
    assert checksummed == set(data)
    assert set(BLOCK_ARRAYS) <= checksummed


def test_unknown_paths_are_not_in_the_schema():
    assert array_schema("crystals/properties/band_gap").path == "crystals/properties/<name>"
    with pytest.raises(KeyError):
        array_schema("crystals/properties/a/b")
    with pytest.raises(KeyError):
        array_schema("grids/density")


def test_verify_catches_missing_and_corrupted_chunks(json_source, tmp_path):
    out = tmp_path / "r.zarr"
    build(json_source, out, config=BuildConfig(samples_per_crystal=2, block_samples=24), quiet=True)
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", str(out)])
    assert ok.exit_code == 0 and "OK" in ok.output

    (out / "species" / "c" / "1" / "0" / "0" / "0").unlink()
    chunk = out / "density" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    bad = runner.invoke(main, ["verify", str(out)])
    assert bad.exit_code == 1
    assert "missing chunk species/c/1/0/0/0" in bad.output
    assert "corrupted chunk density/c/0/0/0/0" in bad.output


def test_the_attributes_are_typed(small_store):
    from crystalgrid.dataset import open_dataset
    from crystalgrid.errors import IntegrityError
    from crystalgrid.store import StoreMeta

    dataset = open_dataset(small_store)
    meta = dataset.meta
    assert meta.complete and meta.representation == "single"
    assert meta.n_samples == len(dataset) == 2 * meta.n_crystals
    assert meta.n_atoms == int(dataset.atom_offset[-1])
    assert sum(b - a for a, b in (meta.split_range(s) for s in ("train", "val", "test"))) == len(
        dataset
    )
    assert meta.grid == dataset.spec.to_dict()
    with pytest.raises(IntegrityError, match="incomplete"):
        StoreMeta.from_attrs({"format": "crystalgrid-store/1", "state": "complete"})


def test_damaged_metadata_is_one_line_everywhere(small_store):
    from crystalgrid.dataset import open_dataset
    from crystalgrid.errors import IntegrityError

    (small_store / "species" / "zarr.json").write_text("{cut sho")
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(small_store)])
    assert result.exit_code == 1
    assert "damaged metadata species/zarr.json" in result.output
    # Readers take the group's consolidated copy of the metadata and go on.
    np.testing.assert_array_equal(
        open_dataset(small_store).batch(0, 2, fields=("species",))["species"],
        zarr.open_group(str(small_store), mode="r")["species"][:2],
    )
    (small_store / "zarr.json").write_text("")
    for verb in ("info", "verify"):
        result = runner.invoke(main, [verb, str(small_store)])
        assert result.exit_code == 2
        assert len(result.output.strip().splitlines()) == 1
        assert "zarr.json is damaged" in result.output
    with pytest.raises(IntegrityError, match=r"zarr\.json is damaged"):
        open_dataset(small_store)


def test_a_truncated_chunk_is_named_by_verify_without_decoding_it(small_store):
    chunk = small_store / "density" / "c" / "0" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])  # Blosc would read past the end of it
    result = CliRunner().invoke(main, ["verify", str(small_store)])
    assert result.exit_code == 1
    assert "corrupted chunk density/c/0/0/0/0 (truncated)" in result.output


def test_a_chunk_that_does_not_decode_is_one_line_from_a_read():
    from crystalgrid.errors import IntegrityError
    from crystalgrid.store import read_rows

    class Undecodable:
        path = "density"

        def __getitem__(self, selection):
            raise RuntimeError("error during blosc decompression: -1")

    with pytest.raises(IntegrityError, match="a chunk of density does not decode"):
        read_rows(Undecodable(), slice(0, 2), "/data/x.zarr")


def test_stores_with_either_checksum_verify_and_catch_damage(small_store):
    """New stores digest chunks with CRC-32; stores built before (no ``checksum`` attribute)
    hold BLAKE2b-64 digests, and verify reads each with its own."""
    import zarr as z

    from crystalgrid.errors import BadInputError
    from crystalgrid.store import verify
    from crystalgrid.store._checksums import chunk_digest, chunk_slices
    from crystalgrid.store._open import arrays_under
    from crystalgrid.store._writer import consolidate

    group = z.open_group(str(small_store), mode="r+")
    meta = dict(group.attrs["crystalgrid"])
    assert meta["checksum"] == "crc32" and verify(small_store).ok
    values = group["density"][:2]
    assert chunk_digest(values, "crc32") != chunk_digest(values, "blake2b-64")
    # Rewrite the store as one built before: BLAKE2b-64 digests, no attribute.
    for name in (p.lstrip("/") for p in arrays_under(group["checksums"], "")):
        array = group[name]
        digests = [
            chunk_digest(array[chunk_slices(array, i)], "blake2b-64")
            for i in range(array.cdata_shape[0])
        ]
        group[f"checksums/{name}"][:] = np.array(digests, dtype=np.uint64)
    del meta["checksum"]
    group.attrs["crystalgrid"] = meta
    consolidate(group)
    assert verify(small_store).ok
    group["species"][0] = group["species"][0] + 1  # damage that decodes
    result = verify(small_store)
    assert not result.ok and any("checksum mismatch" in p for p in result.problems)
    meta["checksum"] = "sha3-512"
    group.attrs["crystalgrid"] = meta
    with pytest.raises(BadInputError, match="unknown chunk checksum 'sha3-512'"):
        verify(small_store)
