"""The loading API: open_dataset, split views, batches, dask and torch access."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from crystalgrid import BuildConfig, build, open_dataset
from crystalgrid.errors import BadInputError, IntegrityError, NotFoundError
from crystalgrid.grids.placement import Crystal, placements
from crystalgrid.sources import DemoSource


class FirstOfDemo:
    """The first 48 demo records (a small Source; the filter rejects the larger cells)."""

    name = "demo-48"

    def __init__(self):
        self._records = [r for r in DemoSource().records()][:48]

    def records(self):
        return iter(self._records)

    def provenance(self):
        return {"kind": "test", "licence": "MIT", "citation": "pymatgen"}

    def fingerprint(self):
        return "demo-48"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "single.zarr"
    config = BuildConfig(
        representation="single", samples_per_crystal=3, chunk_samples=6, block_samples=12
    )
    build(FirstOfDemo(), path, config=config, quiet=True)
    return path


def test_splits_are_contiguous_and_cover_the_store(store):
    ds = open_dataset(store)
    assert ds.representation == "single" and ds.spec.bins == 30
    views = [ds.split(name) for name in ("train", "val", "test")]
    assert sum(len(v) for v in views) == len(ds)
    assert (
        views[0].start == 0 and views[0].stop == views[1].start and views[1].stop == views[2].start
    )
    assert ds.splits == {"train": len(views[0]), "val": len(views[1]), "test": len(views[2])}
    split_codes = ds.group["samples/split"][:]
    for code, view in enumerate(views):
        assert set(split_codes[view.start : view.stop].tolist()) <= {code}
    assert ds.attrs["licence"] == "MIT"
    with pytest.raises(BadInputError, match="split must be"):
        ds.split("training")


def test_integer_and_slice_indexing(store):
    view = open_dataset(store).split("train")
    one = view[4]
    assert one["density"].shape == (30, 30, 30) and one["density"].dtype == np.float32
    assert one["species"].dtype == np.uint8 and one["index"] == view.start + 4
    assert one["atom_positions"].shape == (len(one["atom_numbers"]), 3)
    assert np.all((one["atom_positions"] >= 0) & (one["atom_positions"] < 10))
    # Every ground-truth atom marks its own voxel in the species grid.
    voxel = np.floor(one["atom_positions"] / (10 / 30)).astype(int)
    np.testing.assert_array_equal(one["species"][tuple(voxel.T)], one["atom_numbers"])
    last = view[-1]
    assert last["index"] == view.stop - 1
    batch = view[2:9]
    assert batch["density"].shape == (7, 30, 30, 30) and len(batch["atom_numbers"]) == 7
    np.testing.assert_array_equal(batch["density"][2], one["density"])
    assert batch["material_id"][2] == one["material_id"]
    with pytest.raises(IndexError):
        view[len(view)]
    with pytest.raises(IndexError, match="step 1"):
        view[::2]
    with pytest.raises(TypeError):
        view["0"]


def test_samples_match_their_recorded_transform(store):
    """The stored transform, structure and spec recompute the sample's ground truth."""
    ds = open_dataset(store)
    sample = ds.all()[7]
    crystal_index = int(ds.group["samples/crystal"][7])
    structure = ds.structure(crystal_index)
    placement = placements(
        Crystal.from_structure(structure), sample["material_id"], "single", ds.spec, n_samples=3
    )[7 % 3]
    np.testing.assert_allclose(placement.transform, sample["transform"])
    np.testing.assert_allclose(placement.atom_positions, sample["atom_positions"], atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 5, 24])
def test_iter_batches_sequential_and_shuffled(store, batch_size):
    view = open_dataset(store).split("train")
    seq = [b for b in view.iter_batches(batch_size)]
    order = np.concatenate([b["index"] for b in seq])
    np.testing.assert_array_equal(order, np.arange(view.start, view.stop))
    assert all(len(b["index"]) == batch_size for b in seq[:-1])
    shuffled = np.concatenate(
        [b["index"] for b in view.iter_batches(batch_size, shuffle=True, seed=1)]
    )
    again = np.concatenate(
        [b["index"] for b in view.iter_batches(batch_size, shuffle=True, seed=1)]
    )
    other = np.concatenate(
        [b["index"] for b in view.iter_batches(batch_size, shuffle=True, seed=2)]
    )
    assert sorted(shuffled.tolist()) == list(range(view.start, view.stop))
    np.testing.assert_array_equal(shuffled, again)
    assert not np.array_equal(shuffled, other) and not np.array_equal(shuffled, order)
    dropped = [len(b["index"]) for b in view.iter_batches(batch_size, drop_last=True)]
    assert (
        all(n == batch_size for n in dropped)
        and sum(dropped) == len(view) // batch_size * batch_size
    )


def test_batches_carry_the_right_rows(store):
    view = open_dataset(store).split("train")
    for batch in view.iter_batches(5, shuffle=True, seed=0):
        for row in (0, len(batch["index"]) - 1):
            single = view[int(batch["index"][row]) - view.start]
            np.testing.assert_array_equal(batch["density"][row], single["density"])
            np.testing.assert_array_equal(batch["species"][row], single["species"])
            np.testing.assert_array_equal(batch["atom_numbers"][row], single["atom_numbers"])
            assert batch["material_id"][row] == single["material_id"]
    grids_only = next(view.iter_batches(4, fields=("density", "species")))
    assert set(grids_only) == {"density", "species", "index"}
    with pytest.raises(ValueError, match="unknown fields"):
        next(view.iter_batches(4, fields=("density", "charge")))


def test_to_dask(store):
    view = open_dataset(store).split("val")
    arrays = view.to_dask()
    assert arrays["density"].shape == (len(view), 30, 30, 30)
    np.testing.assert_array_equal(arrays["species"][1].compute(), view[1]["species"])


def test_iter_batches_shares_an_epoch_among_ranks(store):
    view = open_dataset(store).split("train")
    for drop_last in (False, True):
        shares = [
            np.concatenate(
                [
                    b["index"]
                    for b in view.iter_batches(
                        4, shuffle=True, seed=5, rank=r, world_size=3, drop_last=drop_last
                    )
                ]
            )
            for r in range(3)
        ]
        sizes = {len(s) for s in shares}
        assert len(sizes) == 1  # equal steps on every rank
        together = np.concatenate(shares).tolist()
        if drop_last:
            assert len(set(together)) == len(together) and sizes.pop() % 4 == 0
        else:
            assert set(together) == set(range(view.start, view.stop))
    one = np.concatenate([b["index"] for b in view.iter_batches(4, shuffle=True, seed=5)])
    np.testing.assert_array_equal(one, view.order(shuffle=True, seed=5))


def test_rejects_and_source_structures(store):
    ds = open_dataset(store)
    rejects = ds.rejects()
    assert rejects and all(reason for _, reason, _ in rejects)
    assert {r for _, r, _ in rejects} == set(ds.attrs["rejects"])
    structure = ds.structure(0)
    assert len(structure) == int(np.diff(ds.group["crystals/site_offset"][:2])[0])


def test_unfinished_and_foreign_stores_are_refused(store, tmp_path):
    with pytest.raises(NotFoundError, match="no dataset"):
        open_dataset(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(BadInputError, match="not a crystalgrid dataset"):
        open_dataset(tmp_path / "plain.zarr")
    import shutil

    shutil.copytree(store, tmp_path / "cut.zarr")
    group = zarr.open_group(str(tmp_path / "cut.zarr"), mode="r+")
    group.attrs["crystalgrid"] = {**group.attrs["crystalgrid"], "state": "gridding"}
    with pytest.raises(BadInputError, match="unfinished build"):
        open_dataset(tmp_path / "cut.zarr")


@pytest.mark.parametrize("name", ["atoms/position", "atoms/number", "samples/atom_offset"])
def test_a_truncated_chunk_of_a_ragged_array_is_one_line_without_decoding_it(small_build, name):
    """The atoms and their offsets are read as checked Blosc frames too: a cut chunk is a
    one-line error naming it, never handed to Blosc (which can read past a cut frame)."""
    out = small_build("repeated")
    chunk = out.joinpath(name, "c", "0", *(["0"] if name == "atoms/position" else []))
    chunk.write_bytes(chunk.read_bytes()[:40])
    view = open_dataset(out).split("train")
    with pytest.raises(IntegrityError) as raised:
        view[0:4]
    assert str(raised.value) == (
        f"{out}: chunk 0 of {name} is truncated; run crystalgrid verify, then restore or "
        "rebuild the store"
    )
    grids = view.dataset.batch(0, 4, ("density", "species"))  # the grids still read
    assert grids["density"].shape[0] == 4
