"""Tests for crystalgrid.sources.open_source: which source a location gets."""

from __future__ import annotations

import gzip
import json
import sys

import pytest
from pymatgen.io.cif import CifWriter

import crystalgrid.sources as sources
from crystalgrid.errors import BadInputError, CrystalgridError
from crystalgrid.sources import (
    CifDirectorySource,
    CifFileSource,
    CsvSource,
    DemoSource,
    JsonSource,
    open_source,
)


@pytest.fixture
def files(tmp_path, nacl):
    cif = str(CifWriter(nacl))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "NaCl.cif").write_text(cif)
    (tmp_path / "one.cif").write_text(cif)
    (tmp_path / "table.csv").write_text("material_id,cif\nmp-1,x\n")
    records = json.dumps([{"material_id": "mp-1", "structure": nacl.as_dict()}])
    (tmp_path / "list.json").write_text(records)
    (tmp_path / "list.json.gz").write_bytes(gzip.compress(records.encode()))
    (tmp_path / "UPPER.JSON").write_text(records)
    (tmp_path / "notes.txt").write_text("hello")
    return tmp_path


def test_none_is_the_demo():
    assert isinstance(open_source(None), DemoSource)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("folder", CifDirectorySource),
        ("one.cif", CifFileSource),
        ("table.csv", CsvSource),
        ("list.json", JsonSource),
        ("list.json.gz", JsonSource),
        ("UPPER.JSON", JsonSource),
    ],
)
def test_dispatch_by_kind(files, name, kind):
    source = open_source(files / name)
    assert type(source) is kind
    assert open_source(str(files / name)).fingerprint() == source.fingerprint()
    assert len(list(source.records())) == 1


def test_keywords_reach_the_source(files):
    source = open_source(files / "list.json.gz", licence="CC-BY 4.0", citation="Jain 2013")
    assert source.provenance()["licence"] == "CC-BY 4.0"
    assert source.provenance()["citation"] == "Jain 2013"


def test_missing_path(tmp_path):
    with pytest.raises(CrystalgridError, match=r"^source not found: .*absent\.csv$"):
        open_source(tmp_path / "absent.csv")


def test_unknown_extension_names_accepted_kinds(files):
    with pytest.raises(CrystalgridError) as info:
        open_source(files / "notes.txt")
    message = str(info.value)
    assert "notes.txt" in message
    for kind in (".cif", ".csv", ".json", ".json.gz", "collection.json"):
        assert kind in message
    assert "\n" not in message


def test_a_folder_no_format_opens_names_every_format_tried(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadInputError) as info:
        open_source(tmp_path)
    message = str(info.value)
    assert message.startswith(f"no source format can open {tmp_path} (tried: ")
    for source_format in sources.formats():
        assert source_format.describes in message
    assert "\n" not in message


def test_collection_directory_goes_to_open_collection(tmp_path, monkeypatch):
    collection = pytest.importorskip("crystalgrid.sources.collection")
    (tmp_path / "collection.json").write_text("{}")
    (tmp_path / "stray.cif").write_text("data_x\n")  # must not make it a CIF directory
    calls = []
    sentinel = object()

    def fake_open_collection(path, **kw):
        calls.append((path, kw))
        return sentinel

    monkeypatch.setattr(collection, "open_collection", fake_open_collection)
    assert open_source(tmp_path) is sentinel
    assert calls == [(tmp_path, {})]


def test_public_names():
    for name in sources.__all__:
        assert hasattr(sources, name)
    assert {"RawRecord", "Rejected", "Source", "parse_record", "open_source"} <= set(
        sources.__all__
    )


@pytest.mark.parametrize(
    ("module", "make", "extra"),
    [
        ("ase", lambda p: sources.ExtxyzSource(p / "a.xyz"), "ase"),
        ("ase", lambda p: sources.AseDbSource(p / "a.db"), "ase"),
        ("pyarrow", lambda p: sources.OptimadeParquetSource(p / "a.parquet"), "parquet"),
    ],
)
def test_a_missing_package_names_its_extra(tmp_path, monkeypatch, module, make, extra):
    for name in list(sys.modules):
        if name == module or name.startswith(f"{module}."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(CrystalgridError) as info:
        make(tmp_path)
    message = str(info.value)
    assert f"pip install 'crystalgrid[{extra}]'" in message and "\n" not in message


def test_a_format_of_ones_own_is_one_class(tmp_path, nacl, monkeypatch):
    """A FileSource subclass with kind, describes, can_open and records(), registered, is
    picked by open_source; it needs no constructor of its own."""
    from crystalgrid.sources import FileSource, RawRecord, parse_record, register_format

    class StructureJson(FileSource):
        kind = "structure_json"
        describes = "a .sjson file holding one Structure dict"

        @classmethod
        def can_open(cls, path):
            return path.name.endswith(".sjson")

        def records(self):
            yield RawRecord(self.name, "dict", json.loads(self.path.read_text()))

    monkeypatch.setattr(sources.registry, "FORMATS", list(sources.registry.FORMATS))
    register_format(StructureJson)
    path = tmp_path / "nacl.sjson"
    path.write_text(json.dumps(nacl.as_dict()))
    source = open_source(path, licence="CC0")
    assert type(source) is StructureJson and source.provenance()["licence"] == "CC0"
    (record,) = source.records()
    assert parse_record(record).composition.reduced_formula == "NaCl"
    assert "a .sjson file holding one Structure dict" in sources.registry.accepted()


def test_the_new_sources_pickle(tmp_path, nacl):
    """Sources hold no module or handle, so they can travel to a worker."""
    import pickle

    pytest.importorskip("ase")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from ase.db import connect

    from crystalgrid.sources import AseDbSource, ExtxyzSource, OptimadeParquetSource

    row = {
        "immutable_id": "a",
        "lattice_vectors": nacl.lattice.matrix.tolist(),
        "species_at_sites": [s.specie.symbol for s in nacl],
        "cartesian_site_positions": nacl.cart_coords.tolist(),
    }
    pq.write_table(pa.Table.from_pylist([row]), str(tmp_path / "a.parquet"))
    (tmp_path / "a.xyz").write_text(
        '1\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 pbc="T T T"\nNa 0 0 0\n'
    )
    from pymatgen.io.ase import AseAtomsAdaptor

    with connect(str(tmp_path / "a.db")) as db:
        db.write(AseAtomsAdaptor.get_atoms(nacl))
    for source in (
        OptimadeParquetSource(tmp_path / "a.parquet"),
        ExtxyzSource(tmp_path / "a.xyz"),
        AseDbSource(tmp_path / "a.db"),
    ):
        again = pickle.loads(pickle.dumps(source))
        assert [r.material_id for r in again.records()] == [r.material_id for r in source.records()]
