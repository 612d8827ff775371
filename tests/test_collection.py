"""The on-disk collection: atomic pages, manifest checksums, the Source reader, the writer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from crystalgrid.collection import (
    CITATION,
    FORMAT,
    LICENCE,
    CollectionWriter,
    check_target,
    encode_page,
    load_manifest,
    page_name,
)
from crystalgrid.errors import BadInputError, IntegrityError, LockedError, NotFoundError
from crystalgrid.sources.base import RawRecord, Rejected, parse_record
from crystalgrid.sources.collection import open_collection


def header(**extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "source": "materials-project",
        "query": {"criteria": {"nsites_min": 1}},
        "licence": LICENCE,
        "citation": CITATION,
        "pages": {},
        "complete": False,
        **extra,
    }


def record(material_id: str, structure: Any, **properties: Any) -> dict[str, Any]:
    return {
        "material_id": material_id,
        "formula": "X",
        "structure": structure.as_dict() if structure is not None else None,
        "properties": properties,
    }


@pytest.fixture
def collection(tmp_path: Path, nacl, triclinic) -> Path:
    """Two pages: [nacl, triclinic] and [a record without structure, nacl]."""
    path = tmp_path / "c"
    with CollectionWriter(path, header(expected_pages=2)) as writer:
        writer.write_page(0, [record("mp-1", nacl, band_gap=5.0), record("mp-2", triclinic)])
        writer.write_page(1, [record("mp-3", None), record("mp-4", nacl, band_gap=None)])
        writer.update(complete=True)
    return path


def test_records_in_page_then_record_order(collection: Path, nacl) -> None:
    source = open_collection(collection)
    records = list(source.records())
    assert [r.material_id for r in records] == ["mp-1", "mp-2", "mp-3", "mp-4"]
    assert isinstance(records[2], Rejected) and records[2].reason == "no_structure"
    first = records[0]
    assert isinstance(first, RawRecord) and first.kind == "dict"
    assert first.properties == {"band_gap": 5.0}
    assert first.origin == "c/pages/page-000000.json.gz[0]"
    assert parse_record(first) == nacl
    assert list(source.records()) == records  # re-iterable, same order
    assert len(source) == 4 and source.complete


def test_provenance_and_fingerprint(collection: Path, tmp_path: Path, nacl) -> None:
    source = open_collection(collection)
    info = source.provenance()
    assert "pages" not in info
    assert info["licence"] == "CC-BY-4.0" and info["citation"].startswith("Jain et al.")
    assert info["count"] == 4 and info["kind"] == "collection"
    assert info["location"] == str(collection.resolve())

    # Same records -> same bytes -> same fingerprint; different records -> different one.
    twin = tmp_path / "twin"
    with CollectionWriter(twin, header()) as writer:
        for index in (1, 0):  # page order does not depend on write order
            data = (collection / "pages" / page_name(index)).read_bytes()
            writer.write_page(index, json.loads(gzip.decompress(data)))
        writer.update(complete=True)
    assert open_collection(twin).fingerprint() == source.fingerprint()
    assert len(source.fingerprint()) == 64
    with CollectionWriter(twin, load_manifest(twin)) as writer:
        writer.write_page(1, [record("mp-3", nacl)])
    assert open_collection(twin).fingerprint() != source.fingerprint()


def test_pages_are_reproducible_bytes(nacl) -> None:
    records = [record("mp-1", nacl, band_gap=1.0)]
    assert encode_page(records) == encode_page(json.loads(json.dumps(records)))


def test_corrupted_page_is_named(collection: Path) -> None:
    page = collection / "pages" / page_name(1)
    data = bytearray(page.read_bytes())
    data[-12] ^= 0xFF
    page.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"page page-000001\.json\.gz is corrupted"):
        open_collection(collection)


def test_missing_page_is_named(collection: Path) -> None:
    (collection / "pages" / page_name(0)).unlink()
    with pytest.raises(IntegrityError, match=r"page page-000000\.json\.gz is missing"):
        open_collection(collection)


def test_page_changed_after_open_is_caught_while_reading(collection: Path) -> None:
    source = open_collection(collection)
    (collection / "pages" / page_name(1)).write_bytes(encode_page([]))
    with pytest.raises(IntegrityError, match=r"page-000001\.json\.gz is corrupted"):
        list(source.records())


def test_incomplete_needs_allow_incomplete(tmp_path: Path, nacl) -> None:
    path = tmp_path / "part"
    with CollectionWriter(path, header(expected_pages=3)) as writer:
        writer.write_page(0, [record("mp-1", nacl)])
    with pytest.raises(BadInputError, match=r"incomplete \(1 of 3 pages\)"):
        open_collection(path)
    assert [r.material_id for r in open_collection(path, allow_incomplete=True).records()] == [
        "mp-1"
    ]


def test_no_collection_or_bad_manifest(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no collection at"):
        open_collection(tmp_path / "nowhere")
    (tmp_path / "collection.json").write_text("{not json")
    with pytest.raises(BadInputError, match="not valid JSON"):
        open_collection(tmp_path)
    (tmp_path / "collection.json").write_text(json.dumps({"format": "something-else/9"}))
    with pytest.raises(BadInputError, match="not a crystalgrid-collection/1 manifest"):
        open_collection(tmp_path)


def test_writer_drops_bad_pages_and_stale_temp_files(collection: Path) -> None:
    (collection / "pages" / page_name(1)).write_bytes(b"garbage")
    stale = collection / "pages" / ".page-000002.json.gz.1234.tmp"
    stale.write_bytes(b"half a page")
    with CollectionWriter(collection, load_manifest(collection)) as writer:
        assert writer.dropped == [page_name(1)]
        assert writer.has_page(0) and not writer.has_page(1)
        assert writer.manifest["count"] == 2
    assert not stale.exists()
    assert load_manifest(collection)["count"] == 2  # the manifest on disk says so too


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "locked"
    busy = "another crystalgrid process is writing"
    with CollectionWriter(path, header()), pytest.raises(LockedError, match=busy):
        CollectionWriter(path, header()).__enter__()
    with CollectionWriter(path, header()):  # released on exit
        pass


def test_target_must_be_new_empty_or_a_collection(tmp_path: Path, collection: Path) -> None:
    check_target(tmp_path / "new")
    check_target(collection)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("x")
    with pytest.raises(BadInputError, match="not empty"):
        check_target(tmp_path / "other")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="not a directory"):
        CollectionWriter(tmp_path / "file", header()).__enter__()


def test_manifest_is_written_after_every_page(tmp_path: Path, nacl) -> None:
    path = tmp_path / "m"
    with CollectionWriter(path, header()) as writer:
        writer.write_page(0, [record("mp-1", nacl)], missing_ids=["mp-9"])
        on_disk = load_manifest(path)
        assert on_disk["pages"][page_name(0)]["missing_ids"] == ["mp-9"]
        assert on_disk["count"] == 1 and on_disk["updated"]
        assert not list(path.rglob("*.tmp"))


def test_open_collection_takes_the_common_source_keywords(collection: Path) -> None:
    """``open_source(path, name=..., licence=..., citation=...)`` passes these through."""
    extra = "Xie & Grossman, PRL 120, 145301 (2018)"
    source = open_collection(collection, name="cgcnn", licence="MIT", citation=extra)
    info = source.provenance()
    assert source.name == "cgcnn"
    assert info["licence"] == "CC-BY-4.0"  # the data's licence is not replaced
    assert info["citation"] == f"{CITATION}; {extra}"  # added, the MP citation kept
