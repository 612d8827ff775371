"""Shared fixtures: small structures built in code, and the path to ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout (only CI and developers have it)")
    return SHARED_DATA


@pytest.fixture
def nacl():
    """Rock-salt NaCl, conventional cell (8 atoms, a = 5.64 Å)."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


@pytest.fixture
def triclinic():
    """A low-symmetry 5-atom cell with all angles away from 90 degrees."""
    from pymatgen.core import Lattice, Structure

    lattice = Lattice.from_parameters(4.1, 5.3, 6.2, 78.0, 95.0, 107.0)
    coords = [
        [0.1, 0.2, 0.3],
        [0.6, 0.1, 0.8],
        [0.35, 0.7, 0.15],
        [0.8, 0.55, 0.5],
        [0.0, 0.9, 0.65],
    ]
    return Structure(lattice, ["Ti", "O", "O", "Sr", "Fe"], coords)
