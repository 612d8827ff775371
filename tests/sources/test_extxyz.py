"""Extended XYZ: frames, ids, properties, and the frames that are not crystals."""

from __future__ import annotations

import gzip

import pytest
from conformance import SourceConformance, rejects

from crystalgrid.errors import BadInputError, RejectedStructure
from crystalgrid.sources import ExtxyzSource, RawRecord, parse_record

ase_io = pytest.importorskip("ase.io", reason="extended XYZ needs ASE (crystalgrid[ase])")
from pymatgen.io.ase import AseAtomsAdaptor  # noqa: E402


def write_frames(path, structures, *, with_ids=True):
    frames = []
    for index, (material_id, structure) in enumerate(structures):
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.info = {"energy": -1.5 * index, "config_type": "bulk"}
        if with_ids:
            atoms.info["material_id"] = material_id
        frames.append(atoms)
    ase_io.write(str(path), frames, format="extxyz")
    return path


class TestExtxyzConformance(SourceConformance):
    source_class = ExtxyzSource

    def write(self, folder, structures):
        return write_frames(folder / "frames.extxyz", structures)


class TestExtxyzFolderConformance(SourceConformance):
    source_class = ExtxyzSource

    def write(self, folder, structures):
        write_frames(folder / "a.xyz", structures[:2])
        path = write_frames(folder / "b.xyz", structures[2:])
        path.with_suffix(".xyz.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
        return folder


def test_properties_and_fallback_ids(tmp_path, demo_records):
    path = write_frames(tmp_path / "set.xyz", demo_records[:3], with_ids=False)
    records = list(ExtxyzSource(path).records())
    assert [r.material_id for r in records] == ["set:0", "set:1", "set:2"]
    assert records[1].properties == {"energy": -1.5, "config_type": "bulk"}


def test_a_molecule_has_no_cell(tmp_path):
    path = tmp_path / "mol.xyz"
    path.write_text("2\nProperties=species:S:1:pos:R:3 id=water\nO 0 0 0\nH 0 0 0.96\n")
    (record,) = ExtxyzSource(path).records()
    assert isinstance(record, RawRecord) and record.material_id == "water"
    with pytest.raises(RejectedStructure) as info:
        parse_record(record)
    assert info.value.reason == "no_cell"


def test_a_zero_cell_has_no_cell(tmp_path):
    path = tmp_path / "zero.xyz"
    path.write_text(
        '1\nLattice="0 0 0 0 0 0 0 0 0" Properties=species:S:1:pos:R:3 pbc="T T T"\nNa 0 0 0\n'
    )
    (record,) = ExtxyzSource(path).records()
    with pytest.raises(RejectedStructure) as info:
        parse_record(record)
    assert info.value.reason == "no_cell"


def test_broken_counts_and_repeated_ids_are_rejects(tmp_path, demo_records):
    path = write_frames(tmp_path / "set.xyz", [demo_records[0], demo_records[0]])
    assert rejects(ExtxyzSource(path)) == {demo_records[0][0]: "duplicate_id"}
    good = path.read_text()
    path.write_text(good + "three\ncomment\n")
    assert list(rejects(ExtxyzSource(path)).values()) == ["duplicate_id", "unreadable"]
    path.write_text("5\ncomment\nNa 0 0 0\n")
    (record,) = ExtxyzSource(path).records()
    assert record.reason == "unreadable" and "ends before its 5 atoms" in record.detail


def test_a_folder_without_frames_and_a_missing_path(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BadInputError, match=r"no \.xyz or \.extxyz files"):
        ExtxyzSource(tmp_path)
    with pytest.raises(FileNotFoundError, match="source not found"):
        ExtxyzSource(tmp_path / "absent.xyz")
