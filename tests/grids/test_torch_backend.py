"""Batched torch grids agree with the CPU builder: placement, density, species, sampling.

Every test runs on the CPU, and on CUDA too when a GPU is present (the ``device`` fixture).
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crystalgrid.grids import (  # noqa: E402
    BACKEND_AGREEMENT,
    density_grid,
    density_grid_reference,
    species_grid,
)
from crystalgrid.grids import torch_backend as gpu_grids  # noqa: E402
from crystalgrid.grids.placement import Crystal, placements  # noqa: E402
from crystalgrid.grids.sampler import GridSampler, pad_crystals  # noqa: E402
from crystalgrid.grids.torch_backend import (  # noqa: E402
    density_grids,
    density_grids_naive,
    exact_fp32_matmul,
    place_batch,
    random_rotations,
    random_transforms,
    species_grids,
)
from crystalgrid.samples import sample_from_placement  # noqa: E402
from crystalgrid.spec import GridSpec  # noqa: E402

SPEC = GridSpec()
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def big_cell() -> Crystal:
    """A 60-atom triclinic cell with random sites and species (seeded)."""
    from pymatgen.core import Lattice

    rng = np.random.default_rng(1)
    lattice = Lattice.from_parameters(8.5, 9.1, 9.7, 85.0, 97.0, 101.0).matrix
    return Crystal.from_arrays(lattice, rng.random((60, 3)), rng.integers(1, 84, 60))


@pytest.fixture
def crystals(nacl, triclinic, big_cell) -> list[Crystal]:
    return [Crystal.from_structure(nacl), Crystal.from_structure(triclinic), big_cell]


def _cpu_placements(crystals, representation, rotate, n_samples=3):
    """The CPU builder's placements of each crystal, and the crystal of each."""
    out, owner = [], []
    for i, crystal in enumerate(crystals):
        for p in placements(
            crystal, f"c{i}", representation, SPEC, n_samples=n_samples, seed=0, rotate=rotate
        ):
            out.append(p)
            owner.append(i)
    return out, owner


def _assert_species_agree(got: np.ndarray, want: np.ndarray, positions: np.ndarray) -> None:
    """Exactly equal, except (none so far) voxels whose competing distances are within
    1e-6 Å of the radius or of each other, where float64 rounding of the positions decides."""
    bad = np.argwhere(got != want)
    if len(bad) == 0:
        return
    c = SPEC.centres()
    for i, j, k in bad:
        d = np.linalg.norm(positions - np.array([c[i], c[j], c[k]]), axis=1)
        d = np.sort(d[d <= SPEC.species_radius + 1e-6])
        at_radius = np.any(np.abs(d - SPEC.species_radius) <= 1e-6)
        tied = len(d) > 1 and d[1] - d[0] <= 1e-6
        assert at_radius or tied, f"voxel {(i, j, k)}: got {got[i, j, k]}, want {want[i, j, k]}"


def _check_against_cpu(crystals, representation, rotate, device, n_samples=3):
    """place_batch + grids for the CPU builder's transforms == the CPU builder's samples."""
    cpu, owner = _cpu_placements(crystals, representation, rotate, n_samples)
    lattice, frac, numbers, mask = pad_crystals([crystals[i] for i in owner], device)
    transforms = torch.from_numpy(np.stack([p.transform for p in cpu])).to(device)
    placed = place_batch(lattice, frac, numbers, mask, transforms, representation, SPEC)
    density = density_grids(placed.positions, placed.numbers, placed.mask, SPEC).cpu().numpy()
    # As the builder: the density of every atom placed, the species of those inside the box.
    species = species_grids(placed.positions, placed.numbers, placed.inside, SPEC).cpu().numpy()
    worst = 0.0
    for b, p in enumerate(cpu):
        n = int(placed.mask[b].sum())
        # The same atoms in the same order (the species tie-break depends on it).
        assert n == len(p.positions)
        np.testing.assert_allclose(placed.positions[b, :n].cpu().numpy(), p.positions, atol=1e-9)
        assert np.array_equal(placed.numbers[b, :n].cpu().numpy(), p.numbers)
        assert np.array_equal(placed.inside[b, :n].cpu().numpy(), p.inside)
        assert int(placed.n_outside[b]) == p.n_outside
        sample = sample_from_placement(p, "x", SPEC)  # the builder's own grids
        want = sample.density
        worst = max(worst, float(np.abs(density[b] - want).max() / want.max()))
        _assert_species_agree(species[b], sample.species, p.atom_positions)
    # fp32 products with TF32 off. The CPU builder skips the far side of the box for atoms
    # beyond a face (factors < 1e-5 of their peak): <= ~1.5e-5 observed. TF32 gives ~3e-4.
    assert worst <= BACKEND_AGREEMENT
    return placed


@pytest.mark.parametrize(
    ("representation", "rotate"), [("single", None), ("repeated", None), ("repeated", True)]
)
def test_place_and_grid_agree_with_cpu_builder(crystals, representation, rotate, device):
    placed = _check_against_cpu(crystals, representation, rotate, device)
    if representation == "repeated":
        assert placed.mask.sum(1).min() > 200  # periodic images within the cutoff are there


def test_real_mp_crystals_agree_with_cpu_builder(shared_data, device):
    from pymatgen.core import Structure

    with gzip.open(shared_data / "mp_binaries" / "mp_binaries.json.gz") as f:
        records = json.load(f)
    # Every 300th record (mostly small cells) and the first with 30 or more sites.
    big = next(r for r in records if len(r["structure"]["sites"]) >= 30)
    chosen = []
    for r in [*records[::300], big]:
        s = Structure.from_dict(r["structure"])
        if max(s.lattice.abc) < 10.0:
            chosen.append(Crystal.from_structure(s))
    assert len(chosen) >= 6 and max(len(c) for c in chosen) >= 30
    for representation, rotate in (("single", None), ("repeated", None), ("repeated", True)):
        _check_against_cpu(chosen, representation, rotate, device, n_samples=2)


def test_image_ranges_at_integer_corners_and_wrapped_sites(device):
    """Cells whose grown box ends on whole cells, sites whose remainder rounds to 1.0: the
    image range (tighter than the CPU builder's) still gives the CPU builder's atoms."""
    reach = SPEC.cutoff + 0.5 * SPEC.voxel
    frac = np.array([[0.0, 0.0, 0.0], [-1e-17, 0.5, 0.0], [1 - 1e-16, 0.25, 0.5], [0.5, 0.5, 0.5]])
    cells = [
        Crystal.from_arrays(np.eye(3) * a, frac, [8, 26, 14, 3])
        for a in (reach, reach / 2, (SPEC.side + reach) / 3, 2.5)
    ]
    for representation, rotate in (("repeated", None), ("repeated", True), ("single", None)):
        _check_against_cpu(cells, representation, rotate, device, n_samples=3)


def test_density_matches_cpu_and_exact_evaluation(device):
    """Random atoms, inside and around the box, in a padded batch of unequal sizes."""
    rng = np.random.default_rng(0)
    sizes = [1, 7, 40, 130]
    positions = np.zeros((len(sizes), max(sizes), 3))
    numbers = np.zeros((len(sizes), max(sizes)), dtype=np.int64)
    mask = np.zeros((len(sizes), max(sizes)), dtype=bool)
    for b, n in enumerate(sizes):
        positions[b, :n] = rng.uniform(-4, 14, (n, 3))
        numbers[b, :n] = rng.integers(1, 95, n)
        mask[b, :n] = True
    positions[~mask], numbers[~mask] = np.nan, 92  # padding content must not matter
    t = {k: torch.from_numpy(v).to(device) for k, v in dict(p=positions, z=numbers, m=mask).items()}
    got = density_grids(t["p"], t["z"], t["m"], SPEC, chunk=32).cpu().numpy()
    naive = density_grids_naive(t["p"], t["z"], t["m"], SPEC).cpu().numpy()
    for b, n in enumerate(sizes):
        exact = density_grid_reference(positions[b, :n], numbers[b, :n], SPEC)
        cpu = density_grid(positions[b, :n], numbers[b, :n], SPEC)
        assert np.abs(got[b] - exact).max() <= 1e-5 * exact.max()
        assert np.abs(got[b] - cpu).max() <= BACKEND_AGREEMENT * cpu.max()
        assert np.abs(naive[b] - exact).max() <= 1e-5 * exact.max()
    # An isolated atom: Z sigma^-3 (2 pi)^-3/2 at its centre (a voxel centre here).
    c = SPEC.centres()[15]
    one = density_grids(
        torch.tensor([[[c, c, c]]], device=device), torch.tensor([[26]], device=device)
    )
    assert one[0, 15, 15, 15].item() == pytest.approx(26 * SPEC.norm, rel=1e-6)


def test_padding_order_and_chunking_do_not_change_grids(crystals, device):
    cpu, owner = _cpu_placements(crystals, "repeated", None)
    lattice, frac, numbers, mask = pad_crystals([crystals[i] for i in owner], device)
    transforms = torch.from_numpy(np.stack([p.transform for p in cpu])).to(device)
    placed = place_batch(lattice, frac, numbers, mask, transforms, "repeated", SPEC)
    args = (placed.positions, placed.numbers, placed.mask, SPEC)
    together = density_grids(*args)
    species = species_grids(*args)
    # Tiny passes: many atom chunks and many groups of samples.
    pieces = density_grids(*args, chunk=37, max_bytes=1)
    assert torch.allclose(pieces, together, rtol=0, atol=1e-6 * float(together.max()))
    # Padding interleaved with the atoms (mask not a prefix), atoms kept in their order.
    batch, width = placed.mask.shape
    rng = np.random.default_rng(0)
    slots = torch.from_numpy(np.sort(rng.choice(width + 50, width, replace=False))).to(device)

    def spread(t, fill):
        out = torch.full((batch, width + 50, *t.shape[2:]), fill, dtype=t.dtype, device=device)
        out[:, slots] = t
        return out

    spread_args = (
        spread(placed.positions, float("nan")),
        spread(placed.numbers, 92),
        spread(placed.mask, False),
    )
    got = density_grids(*spread_args, SPEC)
    assert torch.allclose(got, together, rtol=0, atol=1e-6 * float(together.max()))
    assert torch.equal(species_grids(*spread_args, SPEC), species)
    # Each sample alone.
    for b in range(batch):
        n = int(placed.mask[b].sum())
        alone = density_grids(placed.positions[b : b + 1, :n], placed.numbers[b : b + 1, :n])
        assert torch.allclose(alone[0], together[b], rtol=0, atol=1e-6 * float(together[b].max()))
        s = species_grids(placed.positions[b : b + 1, :n], placed.numbers[b : b + 1, :n])
        assert torch.equal(s[0], species[b])


def test_species_exact_spec_ties_and_radius(device):
    """Binary-exact voxels (h = 0.25 Å): ties go to the atom listed first, the radius is in."""
    spec = GridSpec(side=8.0, bins=32)
    c = spec.centres()
    x = c[10]  # a voxel centre, 2.625 Å
    # Two atoms 0.25 Å either side of a voxel centre: a tie there; listed Fe-O and O-Fe.
    pair = np.array([[x - 0.25, x, x], [x + 0.25, x, x]])
    lone = np.array([[c[20], c[20], c[20]]])  # at a centre: voxels 2 steps away at 0.5 Å
    positions = np.zeros((3, 2, 3))
    numbers = np.zeros((3, 2), dtype=np.int64)
    mask = np.ones((3, 2), dtype=bool)
    positions[0], numbers[0] = pair, [26, 8]
    positions[1], numbers[1] = pair, [8, 26]
    positions[2, :1], numbers[2, :1], mask[2, 1] = lone, [14], False
    got = species_grids(
        torch.from_numpy(positions).to(device),
        torch.from_numpy(numbers).to(device),
        torch.from_numpy(mask).to(device),
        spec,
    ).cpu()
    for b in range(3):
        want = species_grid(positions[b][mask[b]], numbers[b][mask[b]], spec)
        assert np.array_equal(got[b].numpy(), want)
    assert got[0, 10, 10, 10] == 26 and got[1, 10, 10, 10] == 8
    assert got[2, 22, 20, 20] == 14 and got[2, 20, 20, 18] == 14  # exactly 0.5 Å away
    assert got[2, 22, 21, 20] == 0  # sqrt(0.5^2 + 0.25^2) Å away


def test_species_random_atoms_match_cpu(device):
    rng = np.random.default_rng(3)
    positions = rng.uniform(-0.8, 10.8, (6, 300, 3))
    numbers = rng.integers(1, 119, (6, 300))
    mask = rng.random((6, 300)) < 0.8
    got = species_grids(
        torch.from_numpy(positions).to(device),
        torch.from_numpy(numbers).to(device),
        torch.from_numpy(mask).to(device),
    ).cpu()
    for b in range(6):
        want = species_grid(positions[b][mask[b]], numbers[b][mask[b]], SPEC)
        assert np.array_equal(got[b].numpy(), want)
        assert want.any()


def test_empty_batches_and_bad_input(device):
    empty = torch.zeros(2, 0, 3, dtype=torch.float64, device=device)
    none = torch.zeros(2, 0, dtype=torch.int64, device=device)
    assert density_grids(empty, none).shape == (2, 30, 30, 30)
    assert not density_grids(empty, none).any()
    assert not species_grids(empty, none).any()
    with pytest.raises(ValueError, match="numbers must be"):
        density_grids(torch.zeros(2, 3, 3), torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="integer"):
        species_grids(torch.zeros(1, 3, 3), torch.zeros(1, 3))
    eye = torch.eye(4, dtype=torch.float64)[None]
    with pytest.raises(ValueError, match="representation"):
        place_batch(
            torch.eye(3)[None], torch.zeros(1, 1, 3), torch.ones(1, 1, dtype=torch.int64), None,
            eye, "tiled", SPEC,
        )  # fmt: skip


def test_fp32_products_run_with_tf32_off_and_settings_come_back(monkeypatch):
    cuda, mkldnn = torch.backends.cuda.matmul, torch.backends.mkldnn.matmul
    if not hasattr(cuda, "fp32_precision"):
        pytest.skip("torch < 2.9: legacy switches")
    seen = []
    inner = gpu_grids._accumulate

    def spy(out, fx, plane, *, first):
        seen.append((cuda.fp32_precision, mkldnn.fp32_precision))
        inner(out, fx, plane, first=first)

    monkeypatch.setattr(gpu_grids, "_accumulate", spy)
    saved = (cuda.fp32_precision, mkldnn.fp32_precision)
    try:
        cuda.fp32_precision, mkldnn.fp32_precision = "tf32", "bf16"
        density_grids(torch.rand(2, 5, 3) * 10, torch.ones(2, 5, dtype=torch.int64))
        assert seen and set(seen) == {("ieee", "ieee")}
        assert (cuda.fp32_precision, mkldnn.fp32_precision) == ("tf32", "bf16")
        with pytest.raises(RuntimeError, match="boom"), exact_fp32_matmul():
            raise RuntimeError("boom")
        assert (cuda.fp32_precision, mkldnn.fp32_precision) == ("tf32", "bf16")
    finally:
        cuda.fp32_precision, mkldnn.fp32_precision = saved


def test_rotations_are_haar(device):
    g = torch.Generator(device=device).manual_seed(0)
    r = random_rotations(200_000, g, device=device).cpu()
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r @ r.transpose(1, 2), eye.expand_as(r), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(len(r), dtype=torch.float64))
    # Haar on SO(3): E[R] = 0, E[R_ij^2] = 1/3, E[trace] = 0 (entry s.d. ~ 0.0013 here).
    assert r.mean(0).abs().max() < 0.01
    assert ((r * r).mean(0) - 1 / 3).abs().max() < 0.01
    assert r.diagonal(dim1=1, dim2=2).sum(-1).mean().abs() < 0.02


def test_random_transforms_follow_the_representations(crystals, device):
    lattice = pad_crystals(crystals, device)[0]
    g = torch.Generator(device=device).manual_seed(1)
    single = random_transforms(lattice, "single", SPEC, generator=g)
    centre = torch.cat(
        [0.5 * lattice.sum(1), torch.ones(3, 1, device=device, dtype=torch.float64)], 1
    )
    box = (single @ centre[..., None])[:, :3, 0]
    assert torch.allclose(box, torch.full_like(box, 5.0), atol=1e-12)
    corner = random_transforms(lattice, "repeated", SPEC, generator=g, shift=False)
    assert torch.equal(corner, torch.eye(4, dtype=torch.float64, device=device).expand(3, 4, 4))
    crop = random_transforms(lattice, "repeated", SPEC, generator=g)
    assert torch.equal(crop[:, :3, :3], corner[:, :3, :3])  # not rotated by default
    # The box corner sits at a fractional point in [0, 1)^3 of the crystal.
    origin = torch.linalg.solve(crop[:, :3, :3], -crop[:, :3, 3:])[..., 0]
    frac = torch.linalg.solve(lattice.transpose(1, 2), origin[..., None])[..., 0]
    assert ((frac >= -1e-12) & (frac < 1 + 1e-12)).all()


def test_sampler_draws_are_reproducible_per_seed(crystals, device):
    sampler = GridSampler.from_crystals(crystals, representation="repeated", device=device)
    first = sampler.sample(5, torch.Generator(device=device).manual_seed(7))
    again = sampler.sample(5, torch.Generator(device=device).manual_seed(7))
    other = sampler.sample(5, torch.Generator(device=device).manual_seed(8))
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.transforms, other.transforms)
    assert first.density.shape == (5, 30, 30, 30) and first.density.dtype == torch.float32
    assert first.species.dtype == torch.uint8 and first.species.any()
    # Each drawn sample is what the CPU math gives for its transform.
    for b in range(5):
        c = crystals[int(first.crystals[b])]
        placement = gpu_grids.place_batch(
            *pad_crystals([c], device), first.transforms[b : b + 1], "repeated", SPEC
        )
        p = placement.positions[0].cpu().numpy()
        z = placement.numbers[0].cpu().numpy()
        inside = placement.inside[0].cpu().numpy()
        want = density_grid(p, z, SPEC)
        assert np.abs(first.density[b].cpu().numpy() - want).max() <= BACKEND_AGREEMENT * want.max()
        truth = species_grid(p[inside], z[inside], SPEC)
        assert np.array_equal(first.species[b].cpu().numpy(), truth)
    given = sampler.sample(3, torch.Generator(device=device).manual_seed(0), crystals=[2, 2, 0])
    assert given.crystals.tolist() == [2, 2, 0]
    single = GridSampler.from_crystals(crystals, representation="single", device=device)
    batch = single.sample(4, torch.Generator(device=device).manual_seed(0))
    assert not torch.allclose(batch.transforms[:, :3, :3], torch.eye(3, dtype=torch.float64))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Small datasets built by the CPU builder: single, and rotated repeated crops."""
    from pymatgen.core import Lattice, Structure

    from crystalgrid.builder import BuildConfig, build

    nacl = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    tri = Structure(
        Lattice.from_parameters(4.1, 5.3, 6.2, 78.0, 95.0, 107.0),
        ["Ti", "O", "O", "Sr", "Fe"],
        [[0.1, 0.2, 0.3], [0.6, 0.1, 0.8], [0.35, 0.7, 0.15], [0.8, 0.55, 0.5], [0.0, 0.9, 0.65]],
    )
    cscl = Structure(Lattice.cubic(4.11), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    records = [
        {"material_id": m, "structure": s.as_dict()}
        for m, s in (("nacl", nacl), ("tri", tri), ("cscl", cscl))
    ]
    root = tmp_path_factory.mktemp("gpu-grids")
    source = root / "structures.json.gz"
    with gzip.open(source, "wt") as f:
        json.dump(records, f)
    out = {}
    for name, config in (
        ("single", BuildConfig(representation="single", samples_per_crystal=2)),
        ("repeated", BuildConfig(representation="repeated", samples_per_crystal=3, rotate=True)),
    ):
        build(source, root / f"{name}.zarr", config=config, quiet=True)
        out[name] = root / f"{name}.zarr"
    return out


@pytest.mark.parametrize("representation", ["single", "repeated"])
def test_sampler_from_dataset_reproduces_the_stored_grids(built, representation, device):
    from crystalgrid import open_dataset

    dataset = open_dataset(built[representation])
    sampler = GridSampler.from_dataset(dataset, device=device)
    assert sampler.representation == representation and len(sampler) == 3
    assert sampler.rotate  # single by default, repeated as built
    group = dataset.group
    transforms = torch.from_numpy(group["samples/transform"][:]).to(device)
    crystal = np.searchsorted(sampler.crystal_index, group["samples/crystal"][:])
    density, species = sampler.grids(torch.from_numpy(crystal), transforms)
    stored_density, stored_species = group["density"][:], group["species"][:]
    for b in range(len(crystal)):
        want = stored_density[b]
        assert np.abs(density[b].cpu().numpy() - want).max() <= BACKEND_AGREEMENT * want.max()
        assert np.array_equal(species[b].cpu().numpy(), stored_species[b])
    # A split view holds only its own crystals.
    train = GridSampler.from_dataset(dataset.split("train"), device=device)
    start, stop = dataset.attrs["splits"]["train"]["crystals"]
    assert train.crystal_index.tolist() == list(range(start, stop))
    assert train.material_ids == [str(m) for m in group["crystals/material_id"][start:stop]]
    drawn = train.sample(4, torch.Generator(device=device).manual_seed(0))
    assert drawn.density.shape == (4, 30, 30, 30)
