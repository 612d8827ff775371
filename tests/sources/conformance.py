"""The tests every source format passes: subclass :class:`SourceConformance` once per format.

A subclass sets ``source_class`` and writes a few structures in its format with
:meth:`SourceConformance.write`; the base then checks the source contract, that
``open_source`` picks the format, that every record parses back to the structure written (in
order, with the ids the format gives), that the fingerprint follows the data, that provenance
names the format and keeps the licence, and that a dataset builds from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pymatgen.core import Structure

import crystalgrid
from crystalgrid.builder import BuildConfig
from crystalgrid.contracts import check_source
from crystalgrid.sources import RawRecord, Rejected, open_source, parse_record

#: How many demo structures each format writes.
COUNT = 4


def same_structure(parsed: Structure, expected: Structure) -> bool:
    """Same formula, site count and volume (0.01 Å^3), species and Cartesian positions (0.001 Å)
    in the same order."""
    return (
        parsed.composition.reduced_formula == expected.composition.reduced_formula
        and len(parsed) == len(expected)
        and abs(parsed.volume - expected.volume) < 1e-2
        and [s.specie.Z for s in parsed] == [s.specie.Z for s in expected]
        and np.allclose(parsed.lattice.matrix, expected.lattice.matrix, atol=1e-3)
        and np.allclose(parsed.cart_coords, expected.cart_coords, atol=1e-3)
    )


class SourceConformance:
    """The shared tests; see the module docstring."""

    source_class: ClassVar[type]
    #: Whether records keep the sites' order and Cartesian positions as written (CIF
    #: symmetrises, so a CIF's sites come back in its own order).
    exact_sites: ClassVar[bool] = True

    def write(self, folder: Path, structures: list[tuple[str, Structure]]) -> Path:
        """Write ``structures`` (id, structure) in the format under ``folder``; the location."""
        raise NotImplementedError

    def kept(self, structures: list[tuple[str, Structure]]) -> list[tuple[str, Structure]]:
        """Which of ``structures`` :meth:`write` writes (all; one for a one-structure file)."""
        return structures

    def expected_ids(self, location: Path, structures: list[tuple[str, Structure]]) -> list[str]:
        """The ids the source gives the written structures, in order."""
        return [material_id for material_id, _ in self.kept(structures)]

    @pytest.fixture
    def written(self, tmp_path, demo_records) -> tuple[Path, list[tuple[str, Structure]]]:
        structures = demo_records[:COUNT]
        folder = tmp_path / "written"
        folder.mkdir()
        return self.write(folder, structures), structures

    def test_keeps_the_contract(self, written) -> None:
        location, _ = written
        check_source(self.source_class(location))

    def test_open_source_picks_this_format(self, written) -> None:
        location, _ = written
        assert type(open_source(location)) is self.source_class
        assert type(open_source(str(location))) is self.source_class

    def test_records_parse_back_to_what_was_written(self, written) -> None:
        location, structures = written
        records = list(self.source_class(location).records())
        assert all(isinstance(r, RawRecord) for r in records), records
        assert [r.material_id for r in records] == self.expected_ids(location, structures)
        for record, (_, expected) in zip(records, self.kept(structures), strict=True):
            parsed = parse_record(record)
            if self.exact_sites:
                assert same_structure(parsed, expected), record.material_id
            else:
                assert parsed.composition.reduced_formula == expected.composition.reduced_formula
                assert abs(parsed.volume - expected.volume) < 1e-2

    def test_fingerprint_follows_the_data(self, written, tmp_path) -> None:
        location, structures = written
        before = self.source_class(location).fingerprint()
        assert self.source_class(location).fingerprint() == before
        other = tmp_path / "fewer"
        other.mkdir()
        assert self.source_class(self.write(other, structures[1:])).fingerprint() != before

    def test_provenance_names_the_format_and_keeps_the_licence(self, written) -> None:
        location, _ = written
        source = open_source(location, licence="CC-BY 4.0", citation="a paper")
        provenance = source.provenance()
        assert provenance["kind"] == self.source_class.kind
        assert provenance["licence"] == "CC-BY 4.0"
        assert provenance["citation"] == "a paper"
        assert str(location.resolve()) in provenance["location"] or provenance["location"] in str(
            location.resolve()
        )

    def test_a_dataset_builds_from_it(self, written, tmp_path) -> None:
        location, structures = written
        out = tmp_path / "built.zarr"
        crystalgrid.build(
            location, out, config=BuildConfig(samples_per_crystal=1, chunk_samples=4), quiet=True
        )
        dataset = crystalgrid.open_dataset(out)
        built = [m for ids in dataset.split_ids().values() for m in ids]
        assert sorted(built) == sorted(self.expected_ids(location, structures))
        assert dataset.meta.source["kind"] == self.source_class.kind


def rejects(source: Any) -> dict[str, str]:
    """``{id: reason}`` of a source's rejects."""
    return {r.material_id: r.reason for r in source.records() if isinstance(r, Rejected)}
