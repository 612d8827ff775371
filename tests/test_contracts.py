"""Every source and view crystalgrid ships, and the tests' doubles, keep their contracts."""

from __future__ import annotations

import numpy as np
import pytest

import crystalgrid
from crystalgrid.builder import BuildConfig
from crystalgrid.contracts import check_source, check_view
from crystalgrid.errors import BadInputError
from crystalgrid.sources import DemoSource


@pytest.mark.filterwarnings("ignore:No Pauling electronegativity:UserWarning")
def test_the_demo_source_keeps_the_contract():
    """The file formats are checked by tests/sources/conformance.py, one class per format."""
    check_source(DemoSource())


def test_the_store_views_keep_the_contract(json_source, tmp_path):
    out = tmp_path / "v.zarr"
    crystalgrid.build(
        json_source, out, config=BuildConfig(samples_per_crystal=2, chunk_samples=4), quiet=True
    )
    dataset = crystalgrid.open_dataset(out)
    for name in ("train", "val", "test"):
        check_view(dataset.split(name), batch_size=3)
    check_view(dataset.all(), batch_size=5)


class _BrokenView:
    """Repeats its first sample: breaks the one-pass coverage."""

    def __len__(self) -> int:
        return 4

    def iter_batches(self, batch_size, *, shuffle=False, seed=0, drop_last=False):
        grid = np.zeros((batch_size, 4, 4, 4), np.float32)
        for _ in range(3):
            yield {"density": grid, "species": grid.astype(np.uint8)}


def test_a_broken_view_is_caught():
    with pytest.raises(BadInputError, match="cover"):
        check_view(_BrokenView(), batch_size=2)
    with pytest.raises(BadInputError, match="no __len__"):
        check_view(object())
