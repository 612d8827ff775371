"""Parquet with OPTIMADE fields (LeMat-Bulk's layout): rows, shards, and the rows that are not
usable crystals."""

from __future__ import annotations

import pytest
from conformance import SourceConformance, rejects

from crystalgrid.errors import BadInputError, RejectedStructure
from crystalgrid.sources import OptimadeParquetSource, parse_record

pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (crystalgrid[parquet])")
pq = pytest.importorskip("pyarrow.parquet")


def optimade_row(material_id, structure, **extra):
    """A structure as LeMat-Bulk writes it."""
    symbols = [site.specie.symbol for site in structure]
    return {
        "immutable_id": material_id,
        "lattice_vectors": structure.lattice.matrix.tolist(),
        "species_at_sites": symbols,
        "cartesian_site_positions": structure.cart_coords.tolist(),
        "species": [
            {"name": s, "chemical_symbols": [s], "concentration": [1.0]}
            for s in sorted(set(symbols))
        ],
        "nsites": len(structure),
        "chemical_formula_reduced": structure.composition.reduced_formula,
        "energy": -1.0,
        **extra,
    }


def write_rows(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return path


class TestOptimadeParquetConformance(SourceConformance):
    source_class = OptimadeParquetSource

    def write(self, folder, structures):
        return write_rows(folder / "shard.parquet", [optimade_row(m, s) for m, s in structures])


class TestOptimadeParquetShardsConformance(SourceConformance):
    source_class = OptimadeParquetSource

    def write(self, folder, structures):
        rows = [optimade_row(m, s) for m, s in structures]
        write_rows(folder / "part-000.parquet", rows[:3])
        write_rows(folder / "part-001.parquet", rows[3:])
        return folder


def test_properties(tmp_path, nacl):
    path = write_rows(tmp_path / "a.parquet", [optimade_row("agm001", nacl, band_gap=5.0)])
    (record,) = OptimadeParquetSource(path).records()
    assert record.properties == {
        "nsites": 8,
        "chemical_formula_reduced": "NaCl",
        "energy": -1.0,
        "band_gap": 5.0,
    }


def test_bad_rows_are_rejects(tmp_path, nacl):
    partial = optimade_row("partial", nacl)
    partial["species"][0] = {"name": "Cl", "chemical_symbols": ["Cl"], "concentration": [0.5]}
    mixed = optimade_row("mixed", nacl)
    mixed["species"][1] = {
        "name": "Na",
        "chemical_symbols": ["Na", "K"],
        "concentration": [0.5, 0.5],
    }
    short = optimade_row("short", nacl)
    short["cartesian_site_positions"] = short["cartesian_site_positions"][:-1]
    rows = [optimade_row("ok", nacl), partial, mixed, short, optimade_row("ok", nacl)]
    source = OptimadeParquetSource(write_rows(tmp_path / "a.parquet", rows))
    assert rejects(source) == {"partial": "disordered", "mixed": "disordered", "ok": "duplicate_id"}
    (bad,) = [r for r in source.records() if r.material_id == "short"]
    with pytest.raises(RejectedStructure, match="8 species for 7 positions") as info:
        parse_record(bad)
    assert info.value.reason == "unparsable"


def test_an_unreadable_shard_is_a_reject_and_the_others_go_on(tmp_path, nacl):
    write_rows(tmp_path / "part-0.parquet", [optimade_row("a", nacl)])
    (tmp_path / "part-1.parquet").write_bytes(b"PAR1 but not really" * 10)
    write_rows(tmp_path / "part-2.parquet", [optimade_row("c", nacl)])
    items = list(OptimadeParquetSource(tmp_path).records())
    assert [(i.material_id, type(i).__name__) for i in items] == [
        ("a", "RawRecord"),
        ("part-1.parquet", "Rejected"),
        ("c", "RawRecord"),
    ]
    assert items[1].reason == "unreadable"


def test_missing_fields_and_empty_folders(tmp_path, nacl):
    row = optimade_row("a", nacl)
    del row["cartesian_site_positions"]
    with pytest.raises(BadInputError, match="lacks the OPTIMADE field"):
        OptimadeParquetSource(write_rows(tmp_path / "a.parquet", [row]))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("x")
    with pytest.raises(BadInputError, match=r"no \.parquet files"):
        OptimadeParquetSource(empty)


def test_a_build_reads_row_groups_on_the_workers_and_equals_the_listed_build(
    tmp_path, demo_records, monkeypatch
):
    """Each row group is a part read by a worker; the store is the one the listed records
    give, and the driver never lists the records."""
    import numpy as np
    import zarr

    import crystalgrid
    from crystalgrid.builder import BuildConfig

    folder = tmp_path / "shards"
    folder.mkdir()
    rows = [optimade_row(m, s) for m, s in demo_records[:12]]
    table = pa.Table.from_pylist(rows[:8])
    pq.write_table(table, str(folder / "part-0.parquet"), row_group_size=3)  # 3 groups
    write_rows(folder / "part-1.parquet", [*rows[8:], rows[0]])  # a repeated id
    (folder / "part-2.parquet").write_bytes(b"not parquet at all")
    source = OptimadeParquetSource(folder)
    assert [(p.row_group, p.first_row) for p in source.partitions()] == [
        (0, 0),
        (1, 3),
        (2, 6),
        (0, 0),
        (-1, 0),
    ]
    config = BuildConfig(samples_per_crystal=1, chunk_samples=4)

    def listed_by_the_driver(self):
        raise AssertionError("the driver listed the records")

    with monkeypatch.context() as patch:
        patch.setattr(OptimadeParquetSource, "records", listed_by_the_driver)
        by_parts = crystalgrid.build(folder, tmp_path / "parts.zarr", config=config, quiet=True)
    assert by_parts.n_crystals == 12
    assert by_parts.rejects == {"duplicate_id": 1, "unreadable": 1}
    monkeypatch.delattr(OptimadeParquetSource, "partitions")
    listed = crystalgrid.build(folder, tmp_path / "listed.zarr", config=config, quiet=True)
    assert listed.n_crystals == 12 and listed.rejects == by_parts.rejects
    a = zarr.open_group(str(tmp_path / "parts.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "listed.zarr"), mode="r")
    for name in ("density", "crystals/material_id", "crystals/frac", "atoms/position"):
        assert np.array_equal(a[name][...], b[name][...]), name


def test_a_shard_without_the_fields_is_one_reject_in_parts_too(tmp_path, nacl):
    write_rows(tmp_path / "part-0.parquet", [optimade_row("a", nacl)])
    row = optimade_row("b", nacl)
    del row["lattice_vectors"]
    write_rows(tmp_path / "part-1.parquet", [row, row])
    source = OptimadeParquetSource(tmp_path)
    listed = [(r.material_id, type(r).__name__) for r in source.records()]
    parts = [(r.material_id, type(r).__name__) for p in source.partitions() for r in p.records()]
    assert listed == parts == [("a", "RawRecord"), ("part-1.parquet", "Rejected")]
