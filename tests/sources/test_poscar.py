"""POSCAR / CONTCAR files and folders."""

from __future__ import annotations

import pytest
from conformance import SourceConformance, rejects
from pymatgen.io.vasp import Poscar

from crystalgrid.errors import BadInputError, RejectedStructure
from crystalgrid.sources import PoscarSource, parse_record


class TestPoscarFolderConformance(SourceConformance):
    source_class = PoscarSource

    def write(self, folder, structures):
        for material_id, structure in structures:
            Poscar(structure).write_file(str(folder / f"{material_id}.vasp"))
        return folder


class TestPoscarCalculationFoldersConformance(SourceConformance):
    source_class = PoscarSource

    def write(self, folder, structures):
        for material_id, structure in structures:
            (folder / material_id).mkdir()
            Poscar(structure).write_file(str(folder / material_id / "CONTCAR"))
        return folder


class TestPoscarFileConformance(SourceConformance):
    source_class = PoscarSource

    def write(self, folder, structures):
        ((material_id, structure),) = self.kept(structures)
        path = folder / f"POSCAR_{material_id}"
        Poscar(structure).write_file(str(path))
        return path

    def kept(self, structures):
        return structures[:1]

    def expected_ids(self, location, structures):
        return [f"POSCAR_{structures[0][0]}"]


def test_bad_files_are_rejects(tmp_path, nacl):
    Poscar(nacl).write_file(str(tmp_path / "POSCAR_a"))
    (tmp_path / "POSCAR_empty").write_text("  \n")
    (tmp_path / "POSCAR_junk").write_text("not\na\nposcar\n")
    (tmp_path / "POSCAR_bytes").write_bytes(b"\xff\xfe\x00")
    source = PoscarSource(tmp_path)
    assert rejects(source) == {"POSCAR_empty": "no_structure", "POSCAR_bytes": "unreadable"}
    (junk,) = [r for r in source.records() if r.material_id == "POSCAR_junk"]
    with pytest.raises(RejectedStructure) as info:
        parse_record(junk)
    assert info.value.reason == "unparsable"


def test_a_folder_without_poscars(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BadInputError, match=r"no POSCAR, CONTCAR or \.vasp files"):
        PoscarSource(tmp_path)


def test_a_calculation_folder_gives_its_relaxed_structure(tmp_path, nacl, triclinic):
    (tmp_path / "calc").mkdir()
    Poscar(triclinic).write_file(str(tmp_path / "calc" / "POSCAR"))  # the input
    Poscar(nacl).write_file(str(tmp_path / "calc" / "CONTCAR"))  # the relaxed result
    (record,) = PoscarSource(tmp_path).records()
    assert record.material_id == "calc"
    assert parse_record(record).composition.reduced_formula == "NaCl"
