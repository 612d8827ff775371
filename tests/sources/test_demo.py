"""Tests for DemoSource: the structures that ship inside pymatgen."""

from __future__ import annotations

from collections import Counter

import pytest

from crystalgrid.errors import RejectedStructure
from crystalgrid.filters import check_structure
from crystalgrid.sources.base import RawRecord, parse_record
from crystalgrid.sources.demo import DemoSource, _aflow_ids


@pytest.fixture(scope="module")
def records() -> list[RawRecord]:
    return list(DemoSource().records())


def test_demo_size_and_unique_ids(records):
    assert len(records) > 250
    assert len(records) == 21 + 288
    assert all(isinstance(r, RawRecord) and r.kind == "dict" for r in records)
    material_ids = [r.material_id for r in records]
    assert len(set(material_ids)) == len(material_ids)
    prefixes = Counter(mid.split(":", 1)[0] for mid in material_ids)
    assert prefixes == {"pymatgen": 21, "aflow": 288}


def test_demo_order_and_known_ids(records):
    material_ids = [r.material_id for r in records]
    pymatgen_ids = material_ids[:21]
    assert pymatgen_ids == sorted(pymatgen_ids)
    assert pymatgen_ids[0] == "pymatgen:BaNiO3"
    assert "pymatgen:LiFePO4" in pymatgen_ids
    assert material_ids[21] == "aflow:AB_hP6_154_a_b"  # cinnabar, first in the file
    # Labels shared by several prototypes are told apart by Strukturbericht or mineral.
    for expected in (
        "aflow:A_oC8_64_f-A11",
        "aflow:A_oC8_64_f-A17",
        "aflow:A_oC8_64_f-A14",
        "aflow:A_hR2_166_c-A7",
        "aflow:A_hR2_166_c-beta_oxygen",
        "aflow:A_hR2_166_c-rhombohedral_graphite",
    ):
        assert expected in material_ids


def test_demo_properties(records):
    by_id = {r.material_id: r for r in records}
    assert by_id["pymatgen:LiFePO4"].properties == {"name": "LiFePO4"}
    cinnabar = by_id["aflow:AB_hP6_154_a_b"].properties
    assert cinnabar == {
        "aflow": "AB_hP6_154_a_b",
        "mineral": "Cinnabar",
        "pearson": "hP6",
        "strukturbericht": "B9",
    }


def test_demo_every_record_parses(records):
    reasons = Counter()
    for record in records:
        assert record.payload["@class"] == "Structure"
        structure = parse_record(record)
        assert len(structure) > 0
        try:
            check_structure(structure)
            reasons["ok"] += 1
        except RejectedStructure as exc:
            reasons[exc.reason] += 1
    assert reasons["ok"] > 200  # most demo cells fit the 10 Å box
    assert set(reasons) <= {"ok", "max_side", "disordered", "too_close"}


def test_demo_cinnabar_is_hgs(records):
    structure = parse_record(next(r for r in records if r.material_id == "aflow:AB_hP6_154_a_b"))
    assert structure.composition.reduced_formula == "HgS"
    assert len(structure) == 6  # hP6


def test_demo_provenance():
    prov = DemoSource().provenance()
    assert prov["kind"] == "demo"
    assert prov["files"] == 22
    assert "pymatgen" in prov["location"]
    assert "AFLOW" in prov["description"]
    assert "util/structures" in prov["description"]
    assert "MIT" in prov["licence"]
    assert "Mehl" in prov["citation"] and "Ong" in prov["citation"]
    assert prov["pymatgen_version"]


def test_demo_deterministic():
    first, second = DemoSource(), DemoSource()
    assert list(first.records()) == list(second.records())
    assert first.fingerprint() == second.fingerprint()
    assert len(first.fingerprint()) == 64
    assert first.name == "demo"


def test_aflow_ids_disambiguation_rules():
    tags = [
        {"aflow": "A_x", "strukturbericht": "None", "mineral": ""},
        {"aflow": "B_y", "strukturbericht": "A1", "mineral": "Copper"},
        {"aflow": "A_x", "strukturbericht": "A2", "mineral": ""},
        {"aflow": "A_x", "strukturbericht": "None", "mineral": "beta tin"},
        {"aflow": "A_x", "strukturbericht": "A2", "mineral": ""},
    ]
    assert _aflow_ids(tags) == [
        "aflow:A_x-1",
        "aflow:B_y",
        "aflow:A_x-A2",
        "aflow:A_x-beta_tin",
        "aflow:A_x-A2-2",
    ]
