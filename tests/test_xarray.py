"""Named dimensions and consolidated metadata: xarray opens a store; older stores upgrade."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from crystalgrid import open_dataset
from crystalgrid.cli import main
from crystalgrid.errors import BadInputError, IntegrityError
from crystalgrid.store import SCHEMA, dimension_names, has_named_dimensions

xr = pytest.importorskip("xarray")


@pytest.fixture
def store(small_build):
    return small_build("repeated")


def _as_built_before(path):
    """Strip what stores built before named dimensions lack: dimension names, consolidation."""
    for doc in path.rglob("zarr.json"):
        meta = json.loads(doc.read_text())
        meta.pop("dimension_names", None)
        meta.pop("consolidated_metadata", None)
        doc.write_text(json.dumps(meta))


def test_every_array_has_its_schema_dimension_names(store):
    group = zarr.open_group(str(store), mode="r", use_consolidated=False)
    for entry in SCHEMA:
        if "<name>" in entry.path:
            continue
        assert group[entry.path].metadata.dimension_names == entry.dims, entry.path
        assert len(entry.dims) == group[entry.path].ndim
    assert group["checksums/density"].metadata.dimension_names == ("density_chunk",)


def test_xarray_opens_the_store_from_one_metadata_read(store):
    logged = zarr.storage.LoggingStore(zarr.storage.LocalStore(str(store), read_only=True))
    grids = xr.open_zarr(logged, consolidated=True, zarr_format=3)
    assert logged.counter["get"] == 1  # the group's zarr.json, holding every array's
    assert grids["density"].dims == ("sample", "x", "y", "z")
    np.testing.assert_array_equal(
        grids["species"][3].values, open_dataset(store).sample(3)["species"]
    )
    tree = xr.open_datatree(store, engine="zarr")  # every group, no conflicting dimensions
    assert tree["crystals"]["lattice"].dims == ("crystal", "vector", "axis")
    assert tree["samples"]["transform"].dims == ("sample", "row", "column")


def test_to_xarray_gives_grids_with_their_per_sample_arrays(store):
    view = open_dataset(store).split("val")
    data = view.to_xarray()
    assert data.sizes["sample"] == len(view)
    np.testing.assert_array_equal(data["density"][1].values, view[1]["density"])
    np.testing.assert_array_equal(data["transform"][1].values, view[1]["transform"])
    assert str(data["material_id"][1].values) == view[1]["material_id"]


def test_a_store_built_before_upgrades_in_place(store):
    _as_built_before(store)
    assert not has_named_dimensions(zarr.open_group(str(store), mode="r"))
    dataset = open_dataset(store)  # crystalgrid reads it as before
    before = dataset.batch(0, 4)
    with pytest.raises(BadInputError, match=r"crystalgrid upgrade .*r\.zarr"):
        dataset.to_xarray()
    result = CliRunner().invoke(main, ["upgrade", str(store)])
    assert result.exit_code == 0 and "named the dimensions of" in result.output
    assert CliRunner().invoke(main, ["verify", "-q", str(store)]).exit_code == 0
    after = open_dataset(store)
    np.testing.assert_array_equal(after.batch(0, 4)["density"], before["density"])
    assert after.to_xarray().sizes["sample"] == len(after)
    again = CliRunner().invoke(main, ["upgrade", str(store)])
    assert "nothing to do" in again.output
    assert dimension_names("crystals/properties/band_gap") == ("crystal",)


def test_a_damaged_array_of_an_unconsolidated_store_is_one_line(store):
    _as_built_before(store)
    (store / "species" / "zarr.json").write_text("{cut sho")
    with pytest.raises(IntegrityError, match="metadata of species is missing or damaged"):
        open_dataset(store).batch(0, 2, fields=("species",))
    result = CliRunner().invoke(main, ["upgrade", str(store)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
