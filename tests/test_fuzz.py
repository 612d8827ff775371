"""Fuzzing: mutated CIFs, CSV rows and JSON records never crash a build.

Each mutated input ends kept (and grids to finite values in both representations) or
rejected with a reason; a problem with the whole input is one ``CrystalgridError``. Seeded
(hypothesis ``derandomize``), a few hundred inputs, well under two minutes.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

from crystalgrid.builder._scan import _scan_shard
from crystalgrid.errors import CrystalgridError
from crystalgrid.filters import FilterConfig
from crystalgrid.grids.placement import Crystal
from crystalgrid.samples import make_samples
from crystalgrid.sources import Rejected, open_source

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

#: What a mutation writes: numbers at the edges, broken syntax, other elements, nothing.
TOKENS = [
    "",
    "0",
    "-0",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "1e-300",
    "99999999999999999999",
    "0.5",
    "-3",
    "X",
    "Og",
    "H",
    "?",
    ".",
    "'",
    '"',
    ",",
    "{",
    "}",
    "[",
    "]",
    "\n",
    "_atom_site_",
    "loop_",
    "#",
    "\x00",
    "é",
    " ",
    "null",
    "true",
]
FILTERS = FilterConfig().to_dict()
SETTINGS = hypothesis.settings(
    derandomize=True,
    database=None,
    max_examples=250,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


def _seeds() -> dict[str, str]:
    """One valid input of each kind: a CIF, a CSV with a CIF column, a JSON list."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    structure = Structure(
        Lattice.from_parameters(4.1, 4.3, 5.2, 88, 95, 101),
        ["Sr", "Ti", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0.25], [0, 0.5, 0.75]],
    )
    cif = str(CifWriter(structure))
    csv_text = 'material_id,cif,energy\nmp-1,"' + cif.replace('"', '""') + '",-1.5\n'
    record = {"material_id": "mp-1", "energy": -1.5, "structure": structure.as_dict()}
    return {"cif": cif, "csv": csv_text, "json": json.dumps([record], indent=1)}


SEEDS = _seeds()


def mutations(text: str):
    """Lists of (position, length cut, token inserted) applied to ``text``."""
    edit = st.tuples(
        st.integers(0, max(0, len(text) - 1)), st.integers(0, 8), st.sampled_from(TOKENS)
    )
    return st.lists(edit, min_size=1, max_size=6)


def mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    for position, cut, token in sorted(edits, reverse=True):
        text = text[:position] + token + text[position + cut :]
    return text


def ends_kept_or_rejected(path: Path) -> None:
    """Read ``path`` as a build does; every record is kept and grids, or has a reason."""
    try:
        records = list(open_source(path).records())
    except CrystalgridError as exc:  # the whole input is unusable: one line
        assert str(exc) and "\n" not in str(exc)
        return
    for record in records:
        if isinstance(record, Rejected):
            assert record.reason
            continue
        (row,), _ = _scan_shard([record], FILTERS)
        if row[0] == "reject":
            assert row[2], row
            continue
        crystal = Crystal(lattice=row[2], frac=row[3], numbers=row[4])
        for representation in ("single", "repeated"):
            (sample,) = make_samples(crystal, row[1], representation, n_samples=1)
            assert np.isfinite(sample.density).all() and sample.density.min() >= 0


@pytest.mark.parametrize(("kind", "suffix"), [("cif", ".cif"), ("csv", ".csv"), ("json", ".json")])
def test_mutated_inputs_never_crash_a_build(kind, suffix):
    seed = SEEDS[kind]

    @SETTINGS
    @hypothesis.given(mutations(seed))
    def check(edits):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"input{suffix}"
            path.write_bytes(mutate(seed, edits).encode("utf-8", "surrogatepass"))
            ends_kept_or_rejected(path)

    check()


NUMBERS = ["NaN", "Infinity", "-Infinity", "1e308", "-1e308", "0", "-0.0", "1e-300", "7", "-7"]


# numpy and pymatgen warn (overflow, invalid value) while parsing such cells; they are then
# rejected or kept by the filters, which is what this test checks.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_records_with_extreme_numbers_never_crash_a_build():
    """JSON that stays valid: lattice, coordinates and properties replaced by extremes."""
    seed = SEEDS["json"]
    spans = [m.span() for m in re.finditer(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", seed)]

    @SETTINGS
    @hypothesis.given(
        st.lists(
            st.tuples(st.sampled_from(spans), st.sampled_from(NUMBERS)), min_size=1, max_size=8
        )
    )
    def check(edits):
        text = seed
        for (a, b), number in sorted(dict(edits).items(), reverse=True):
            text = text[:a] + number + text[b:]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "input.json"
            path.write_text(text)
            ends_kept_or_rejected(path)

    check()


def test_the_unmutated_seeds_are_kept():
    for kind, suffix in (("cif", ".cif"), ("csv", ".csv"), ("json", ".json")):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"input{suffix}"
            path.write_text(SEEDS[kind])
            (record,) = list(open_source(path).records())
            assert _scan_shard([record], FILTERS)[0][0][0] == "ok"
