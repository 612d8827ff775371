"""ASE databases: ids, properties, non-periodic rows."""

from __future__ import annotations

import pytest
from conformance import SourceConformance

from crystalgrid.errors import BadInputError, RejectedStructure
from crystalgrid.sources import AseDbSource, parse_record

ase_db = pytest.importorskip("ase.db", reason="ASE databases need ASE (crystalgrid[ase])")
from ase import Atoms  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from pymatgen.io.ase import AseAtomsAdaptor  # noqa: E402


def write_db(path, structures):
    with ase_db.connect(str(path), append=False) as db:
        for index, (material_id, structure) in enumerate(structures):
            atoms = AseAtomsAdaptor.get_atoms(structure)
            atoms.calc = SinglePointCalculator(atoms, energy=-2.0 * index)
            db.write(atoms, mp_id=material_id, band_gap=0.5)
    return path


class TestAseDbConformance(SourceConformance):
    source_class = AseDbSource

    def write(self, folder, structures):
        return write_db(folder / "set.db", structures)

    def expected_ids(self, location, structures):
        return [row.unique_id for row in ase_db.connect(str(location)).select(sort="id")]


def test_an_id_column_and_properties(tmp_path, demo_records):
    path = write_db(tmp_path / "set.db", demo_records[:2])
    records = list(AseDbSource(path, id_key="mp_id").records())
    assert [r.material_id for r in records] == [m for m, _ in demo_records[:2]]
    assert records[1].properties == {"band_gap": 0.5, "energy": -2.0}
    assert AseDbSource(path, id_key="mp_id").provenance()["id_key"] == "mp_id"


def test_a_molecule_row_has_no_cell(tmp_path):
    path = tmp_path / "mol.db"
    with ase_db.connect(str(path)) as db:
        db.write(Atoms("H2O", positions=[[0, 0, 0], [0, 0, 0.96], [0.9, 0, 0]]))
    (record,) = AseDbSource(path).records()
    with pytest.raises(RejectedStructure) as info:
        parse_record(record)
    assert info.value.reason == "no_cell"


def test_not_a_database_and_a_url(tmp_path):
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BadInputError, match="not a readable ASE database"):
        AseDbSource(path)
    with pytest.raises(BadInputError, match="read locally"):
        AseDbSource("s3://bucket/set.db")
