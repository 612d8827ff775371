"""A view in a plain torch DataLoader: map-style and streamed, workers, epochs and ranks."""

from __future__ import annotations

import numpy as np
import pytest

from crystalgrid import open_dataset

torch = pytest.importorskip("torch")
DataLoader = torch.utils.data.DataLoader


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    from crystalgrid import BuildConfig, build
    from crystalgrid.sources import DemoSource

    class FirstOfDemo:
        name = "demo-40"

        def records(self):
            return iter(list(DemoSource().records())[:40])

        def provenance(self):
            return {"kind": "test", "licence": "MIT"}

        def fingerprint(self):
            return "demo-40"

    path = tmp_path_factory.mktemp("torch") / "single.zarr"
    config = BuildConfig(
        representation="single", samples_per_crystal=3, chunk_samples=4, block_samples=12
    )
    build(FirstOfDemo(), path, config=config, quiet=True)
    return open_dataset(path).split("train")


def _indices(loader) -> list[int]:
    return torch.cat([b["index"] for b in loader]).tolist()


def test_the_map_style_dataset_reads_only_what_is_asked(view):
    data = view.to_torch()
    item = data[0]
    assert set(item) == {"index", "density", "species"} and len(data) == len(view)
    assert item["density"].dtype == torch.float32 and item["density"].shape == (30, 30, 30)
    assert item["species"].dtype == torch.uint8
    np.testing.assert_array_equal(item["species"].numpy(), view[0]["species"])
    small = view.to_torch(("species",), species_dtype="int64")[3]
    assert set(small) == {"index", "species"} and small["species"].dtype == torch.int64
    item["density"][...] = -1  # items are copies: the cached chunk is untouched
    np.testing.assert_array_equal(data[1]["density"].numpy(), view[1]["density"])
    assert _indices(DataLoader(data, batch_size=5)) == list(range(view.start, view.stop))
    with pytest.raises(IndexError):
        data[len(view)]
    with pytest.raises(ValueError, match="species_dtype"):
        view.to_torch(species_dtype="int8")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shuffled_stream_gives_every_sample_once_in_a_seeded_order(view, workers):
    data = view.to_torch(shuffle=True, seed=7, batch_size=5)
    loader = DataLoader(data, batch_size=5, num_workers=workers)
    first = _indices(loader)
    order_of_epoch_0 = data.order().tolist()
    assert sorted(first) == list(range(view.start, view.stop)) and first != sorted(first)
    assert _indices(loader) == first  # same seed and epoch: same order
    batches = [len(b["index"]) for b in loader]
    assert len(batches) == len(loader) and all(n == 5 for n in batches[:-1])  # one short batch
    data.set_epoch(1)
    second = _indices(loader)
    assert sorted(second) == sorted(first) and second != first
    other = _indices(DataLoader(view.to_torch(shuffle=True, seed=8), batch_size=5))
    assert other != first
    if workers == 0:  # one process reads the order as it is
        assert first == order_of_epoch_0
        np.testing.assert_array_equal(second, data.order())


def test_persistent_workers_follow_set_epoch(view):
    data = view.to_torch(shuffle=True, seed=3, batch_size=4)
    loader = DataLoader(data, batch_size=4, num_workers=2, persistent_workers=True)
    orders = []
    for epoch in range(3):
        data.set_epoch(epoch)
        orders.append(_indices(loader))
    fresh = view.to_torch(shuffle=True, seed=3, batch_size=4)
    for epoch, order in enumerate(orders):
        fresh.set_epoch(epoch)
        assert order == _indices(DataLoader(fresh, batch_size=4, num_workers=2))
    assert orders[0] != orders[1] != orders[2]


def test_stream_items_carry_their_sample(view):
    data = view.to_torch(("density", "species", "transform"), shuffle=True, seed=1)
    for item in list(data)[:6]:
        sample = view[int(item["index"]) - view.start]
        np.testing.assert_array_equal(item["density"].numpy(), sample["density"])
        np.testing.assert_array_equal(item["species"].numpy(), sample["species"])
        np.testing.assert_array_equal(item["transform"].numpy(), sample["transform"])
        assert item["species"].dtype == torch.uint8


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_share_an_epoch_equally(view, drop_last):
    world = 3
    shares = []
    for rank in range(world):
        data = view.to_torch(shuffle=True, seed=2, rank=rank, world_size=world, drop_last=drop_last)
        shares.append(_indices(DataLoader(data, batch_size=4, num_workers=2)))
        assert len(shares[-1]) == len(data)
    assert len({len(s) for s in shares}) == 1
    together = [i for s in shares for i in s]
    if drop_last:
        assert len(set(together)) == len(together) == len(view) // world * world
    else:
        assert set(together) == set(range(view.start, view.stop))
    with pytest.raises(ValueError, match="rank"):
        view.to_torch(shuffle=True, rank=3, world_size=3)


def test_a_stream_in_order(view):
    data = view.to_torch(shuffle=False)
    assert _indices(DataLoader(data, batch_size=7)) == list(range(view.start, view.stop))
