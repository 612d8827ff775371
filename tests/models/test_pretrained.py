"""The Python face of a trained model: load by name, structures in and out, bad input in one
line. Runs the shipped single-cell model on structures built in code."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pymatgen.core import Lattice, Structure  # noqa: E402

from crystalgrid.errors import BadInputError, CrystalgridError, IntegrityError, NotFoundError  # noqa: E402
from crystalgrid.models import CrystalModel, load  # noqa: E402


def _rocksalt(a: float, cation: str, anion: str) -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


@pytest.fixture(scope="module")
def model() -> CrystalModel:
    return load("baseline-1h-cpu-single", precision="fp32")


def _periodic_recall(a: Structure, b: Structure, radius: float = 0.5) -> float:
    """Share of ``a``'s sites with a site of ``b`` within ``radius`` Å (periodic)."""
    if not len(b):
        return 0.0
    d = a.lattice.get_all_distances(a.frac_coords, b.frac_coords)
    return float((d.min(axis=1) <= radius).mean())


def test_load_by_name_and_unknown_names(model):
    assert "baseline-1h-cpu-single" in repr(model) and model.decoder == "unet-cell"
    with pytest.raises(NotFoundError, match="no checkpoint file or shipped model"):
        load("no-such-model")
    assert issubclass(NotFoundError, FileNotFoundError)


def test_reconstruct_gives_the_crystal_back_in_its_own_lattice(model):
    crystal = _rocksalt(5.64, "Na", "Cl")  # conventional cell, 8 atoms, fits the box
    rebuilt = model.reconstruct(crystal)
    assert rebuilt.lattice == crystal.lattice
    assert _periodic_recall(crystal, rebuilt) >= 0.75


def test_encode_decode_shapes_and_determinism(model):
    crystal = _rocksalt(4.21, "Mg", "O")
    z = model.encode(crystal)
    assert z.shape == (512,) and z.dtype == np.float32
    np.testing.assert_array_equal(z, model.encode(crystal))
    one = model.decode(z)
    both = model.decode(np.stack([z, z]))
    assert isinstance(one, Structure) and isinstance(both, list) and len(both) == 2
    assert one.lattice.abc == pytest.approx((10.0, 10.0, 10.0))
    assert len(one) == len(both[0]) > 0


def test_sample_and_interpolate(model):
    a = model.sample(3, seed=4)
    b = model.sample(3, seed=4)
    assert [s.formula for s in a] == [s.formula for s in b]
    latents = model.sample_latents(3, seed=4, prior="normal")
    assert latents.shape == (3, 512)
    path = model.interpolate(_rocksalt(5.64, "Na", "Cl"), _rocksalt(4.21, "Mg", "O"), steps=3)
    assert len(path) == 3 and all(isinstance(s, Structure) for s in path)


def test_bad_input_is_one_line(model):
    too_big = Structure(Lattice.cubic(14.0), ["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(BadInputError, match=r"does not fit the 10 Å box: 1 of 2 atoms"):
        model.reconstruct(too_big)
    with pytest.raises(BadInputError, match=r"latents must be \(512,\) or \(n, 512\)"):
        model.decode(np.zeros(511))
    with pytest.raises(BadInputError, match="finite"):
        model.decode(np.full(512, np.nan))
    with pytest.raises(BadInputError, match="pymatgen Structure or an ASE Atoms"):
        model.encode("NaCl")
    with pytest.raises(BadInputError, match="steps must be >= 2"):
        model.interpolate(_rocksalt(5.64, "Na", "Cl"), _rocksalt(5.64, "Na", "Cl"), steps=1)
    with pytest.raises(BadInputError, match="prior must be one of"):
        model.sample(1, prior="uniform")
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    with pytest.raises(BadInputError, match="cannot grid the structure"):
        model.encode(disordered)
    assert issubclass(BadInputError, CrystalgridError) and issubclass(BadInputError, ValueError)
    with pytest.raises(BadInputError, match="decoder must be one of"):
        CrystalModel(model.checkpoint, decoder="peakfit")


def test_a_prior_of_another_model_is_refused(tmp_path, checkpoint):
    from crystalgrid.models.checkpoint import resolve_checkpoint
    from crystalgrid.models.latent.prior import prior_path

    shipped = resolve_checkpoint("baseline-1h-cpu-single")
    if not prior_path(shipped).is_file():
        pytest.skip("the shipped model has no learned prior")
    copy = tmp_path / "other.pt"
    copy.write_bytes(checkpoint.read_bytes())  # a different model ...
    prior_path(copy).write_bytes(prior_path(shipped).read_bytes())  # ... with this one's prior
    with pytest.raises(IntegrityError, match="fitted to another model"):
        load(copy)


def test_the_docs_example_runs_as_written(capsys):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "latent.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 12
    exec(compile(code, "docs/latent.md", "exec"), {})
    printed = capsys.readouterr().out
    assert " 512 " in printed and printed.strip().endswith(" 5")
