"""The dataset build: sources, filters, determinism, resume, errors."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from crystalgrid import open_dataset
from crystalgrid.builder import BuildConfig, build
from crystalgrid.cli import main
from crystalgrid.errors import BadInputError, ConfigError, CrystalgridError
from crystalgrid.samples import make_samples
from crystalgrid.store import verify

GRID_ARRAYS = (
    "density",
    "species",
    "samples/transform",
    "samples/material_id",
    "atoms/position",
    "atoms/number",
)


def _arrays(path):
    g = zarr.open_group(str(path), mode="r")
    return {name: g[name][...] for name in GRID_ARRAYS}


def _assert_same(a, b):
    for name in GRID_ARRAYS:
        assert a[name].dtype == b[name].dtype, name
        if a[name].dtype.kind in "fiu":
            assert a[name].tobytes() == b[name].tobytes(), name
        else:
            assert a[name].tolist() == b[name].tolist(), name


def test_build_store_contents(json_source, tmp_path, demo_records):
    config = BuildConfig(representation="repeated", samples_per_crystal=2, block_samples=24)
    report = build(json_source, tmp_path / "r.zarr", config=config, quiet=True)
    assert report.n_crystals == 30 and report.n_samples == 60
    assert report.rejects == {"max_side": 1, "too_close": 1}
    assert report.splits == {"train": 24, "val": 3, "test": 3}

    ds = open_dataset(tmp_path / "r.zarr")
    g = ds.group
    assert g["density"].shape == (60, 30, 30, 30) and g["density"].dtype == np.float32
    assert g["species"].dtype == np.uint8 and g["density"].chunks[0] == 24
    meta = ds.attrs
    assert meta["grid"]["bins"] == 30 and meta["seed"] == 0 and meta["state"] == "complete"
    assert meta["samples_per_crystal"] == 2 and meta["split_fractions"] == [0.8, 0.1, 0.1]
    assert meta["source"]["kind"] == "json" and len(meta["fingerprint"]) == 64
    # Rejects recorded with id, reason and a sentence.
    rejects = {m: (r, d) for m, r, d in ds.rejects()}
    assert rejects["big"][0] == "max_side" and "12" in rejects["big"][1]
    assert rejects["close"][0] == "too_close"
    # Splits are by crystal: no material id in two splits, and each split is one range.
    ids = {
        name: {ds.split(name)[i]["material_id"] for i in range(len(ds.split(name)))}
        for name in ("train", "val", "test")
    }
    assert (
        not (ids["train"] & ids["val"])
        and not (ids["train"] & ids["test"])
        and not (ids["val"] & ids["test"])
    )
    assert sum(len(v) for v in ids.values()) == 30
    # Every stored sample is exactly what make_samples gives from the stored structure.
    crystals = g["samples/crystal"][:]
    for index in (0, 17, 59):
        sample = ds.all()[index]
        structure = ds.structure(int(crystals[index]))
        k = index % 2
        expected = make_samples(structure, sample["material_id"], "repeated", n_samples=2, seed=0)[
            k
        ]
        # Equal up to float32 rounding (the build sums with one BLAS thread, this test may not).
        np.testing.assert_allclose(sample["density"], expected.density, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(sample["species"], expected.species)
        np.testing.assert_allclose(sample["atom_positions"], expected.atom_positions, atol=1e-5)
        np.testing.assert_array_equal(sample["atom_numbers"], expected.atom_numbers)
    # The source structures and properties travel with the store.
    source_ids = [m for m, _ in demo_records]
    stored_ids = g["crystals/material_id"][:].tolist()
    assert sorted(stored_ids) == sorted(source_ids)
    band_gap = g["crystals/properties/band_gap"][:]
    assert band_gap[stored_ids.index(source_ids[3])] == pytest.approx(0.3)
    assert verify(tmp_path / "r.zarr").ok


def test_single_representation_counts_lost_atoms(json_source, tmp_path):
    config = BuildConfig(representation="single", samples_per_crystal=3)
    build(json_source, tmp_path / "s.zarr", config=config, quiet=True)
    ds = open_dataset(tmp_path / "s.zarr")
    n_atoms = ds.group["samples/n_atoms"][:]
    n_outside = ds.group["samples/n_outside"][:]
    sites = np.diff(ds.group["crystals/site_offset"][:])
    crystal = ds.group["samples/crystal"][:]
    np.testing.assert_array_equal(n_atoms + n_outside, sites[crystal])
    transforms = ds.group["samples/transform"][:]
    assert not np.allclose(transforms[0, :3, :3], transforms[1, :3, :3])  # rotated per sample


def test_identical_across_worker_counts(json_source, tmp_path):
    config = BuildConfig(representation="repeated", samples_per_crystal=3, block_samples=24)
    build(json_source, tmp_path / "one.zarr", config=config, workers=1, quiet=True)
    build(json_source, tmp_path / "two.zarr", config=config, workers=2, quiet=True)
    _assert_same(_arrays(tmp_path / "one.zarr"), _arrays(tmp_path / "two.zarr"))


def test_seed_changes_samples_and_splits(json_source, tmp_path):
    a = build(json_source, tmp_path / "a.zarr", config=BuildConfig(seed=1), quiet=True)
    b = build(json_source, tmp_path / "b.zarr", config=BuildConfig(seed=2), quiet=True)
    assert a.n_samples == b.n_samples
    ga, gb = zarr.open_group(str(tmp_path / "a.zarr")), zarr.open_group(str(tmp_path / "b.zarr"))
    assert ga["crystals/material_id"][:].tolist() != gb["crystals/material_id"][:].tolist()


def test_rerun_is_a_no_op_and_other_config_is_refused(json_source, tmp_path):
    out = tmp_path / "r.zarr"
    build(json_source, out, quiet=True)
    again = build(json_source, out, quiet=True)
    assert again.resumed and again.blocks_computed == 0
    with pytest.raises(BadInputError, match="another source or configuration"):
        build(json_source, out, config=BuildConfig(seed=5), quiet=True)
    replaced = build(json_source, out, config=BuildConfig(seed=5), overwrite=True, quiet=True)
    assert not replaced.resumed


def test_resume_after_a_failed_block(json_source, tmp_path, monkeypatch):
    """A build that died in one block resumes with only the missing blocks, identically."""
    build_module = importlib.import_module("crystalgrid.builder._driver")

    config = BuildConfig(representation="repeated", samples_per_crystal=3, block_samples=24)
    build(json_source, tmp_path / "full.zarr", config=config, quiet=True)
    real = build_module._grid_block

    def dies_in_block_2(location, storage_options, block, config_dict, **kwargs):
        if block == 2:
            raise MemoryError("simulated worker death")
        return real(location, storage_options, block, config_dict, **kwargs)

    monkeypatch.setattr(build_module, "_grid_block", dies_in_block_2)
    with pytest.raises(MemoryError):
        build(json_source, tmp_path / "cut.zarr", config=config, quiet=True)
    g = zarr.open_group(str(tmp_path / "cut.zarr"))
    assert g.attrs["crystalgrid"]["state"] == "gridding"
    assert g["_build/done"][2] == 0
    with pytest.raises(BadInputError, match="unfinished build"):
        open_dataset(tmp_path / "cut.zarr")
    monkeypatch.setattr(build_module, "_grid_block", real)
    report = build(json_source, tmp_path / "cut.zarr", config=config, quiet=True)
    assert report.resumed and 1 <= report.blocks_computed < report.blocks_total
    _assert_same(_arrays(tmp_path / "full.zarr"), _arrays(tmp_path / "cut.zarr"))


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(tmp_path):
    """kill -9 in the middle of the CLI build; the same command finishes it identically."""
    args = ["--repr", "repeated", "--samples", "3", "--block", "24", "--quiet"]
    full, cut = tmp_path / "full.zarr", tmp_path / "cut.zarr"
    cmd = [sys.executable, "-m", "crystalgrid", "build", *args]
    subprocess.run([*cmd, "--out", str(full)], check=True, capture_output=True)
    proc = subprocess.Popen([*cmd, "--out", str(cut)], start_new_session=True)
    done = cut / "_build" / "done" / "c"
    deadline = time.time() + 120
    while time.time() < deadline and (not done.is_dir() or len(os.listdir(done)) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_blocks = zarr.open_group(str(cut))["_build/done"].shape[0]
    finished = len(os.listdir(done))
    assert 3 <= finished < n_blocks, "the kill must land in the middle of the build"
    assert zarr.open_group(str(cut)).attrs["crystalgrid"]["state"] == "gridding"
    result = subprocess.run([*cmd, "--out", str(cut)], check=True, capture_output=True, text=True)
    assert "resumed" in result.stdout
    computed = int(result.stdout.split("resumed, ")[1].split("/")[0])
    assert computed <= n_blocks - finished + 1  # only what was missing (the killed block may redo)
    _assert_same(_arrays(full), _arrays(cut))
    assert verify(cut).ok


# Writing test CIFs of noble-gas structures makes pymatgen warn about their electronegativity.
@pytest.mark.filterwarnings("ignore:No Pauling electronegativity:UserWarning")
def test_sources_of_every_format_build(tmp_path, demo_records, shared_data):
    cif_dir = tmp_path / "cifs"
    cif_dir.mkdir()
    for m, s in demo_records[:5]:
        CifWriter(s).write_file(cif_dir / f"{m.replace(':', '_')}.cif")
    for bad in sorted((shared_data / "bad_cifs").glob("*.cif")):
        shutil.copy(bad, cif_dir / bad.name)
    report = build(cif_dir, tmp_path / "cif.zarr", quiet=True)
    assert report.n_crystals == 5
    reasons = {m: r for m, r, _ in open_dataset(tmp_path / "cif.zarr").rejects()}
    assert reasons == {
        "bad_occu": "unparsable",
        "bad_superflat_inf_loop": "zero_volume",
        "cif_finite_precision_frac_coord_error": "max_side",
        "nosymm": "max_side",
    }
    cgcnn = build(shared_data / "cgcnn_sample", tmp_path / "cgcnn.zarr", quiet=True)
    assert cgcnn.n_crystals + sum(cgcnn.rejects.values()) == 10
    csv = build(
        shared_data / "cdvae_csv" / "mp_20_format_sample.csv", tmp_path / "csv.zarr", quiet=True
    )
    assert csv.n_crystals + sum(csv.rejects.values()) == 2


def test_no_usable_structure_is_an_error(tmp_path):
    path = tmp_path / "bad.json"
    big = Structure(Lattice.cubic(15.0), ["Cu"], [[0, 0, 0]])
    path.write_text(json.dumps([{"material_id": "x", "structure": big.as_dict()}]))
    with pytest.raises(BadInputError, match=r"no usable structure.*max_side 1"):
        build(path, tmp_path / "out.zarr", quiet=True)
    assert not (tmp_path / "out.zarr").exists()


def test_a_block_that_kills_its_workers_is_a_one_line_error(json_source, tmp_path, monkeypatch):
    """dask's KilledWorker becomes a CrystalgridError naming the remedy; the store resumes."""
    from distributed import KilledWorker

    build_module = importlib.import_module("crystalgrid.builder._driver")
    real = build_module._grid_block

    def killer(location, storage_options, block, config_dict, **kwargs):
        if block == 1:
            worker = types.SimpleNamespace(address="tcp://127.0.0.1:1")
            raise KilledWorker("grid-block-1", worker, 3)
        return real(location, storage_options, block, config_dict, **kwargs)

    config = BuildConfig(samples_per_crystal=3, block_samples=24)
    monkeypatch.setattr(build_module, "_grid_block", killer)
    with pytest.raises(CrystalgridError, match=r"killed the Dask workers.*resume"):
        build(json_source, tmp_path / "k.zarr", config=config, quiet=True)
    monkeypatch.setattr(build_module, "_grid_block", real)
    assert build(json_source, tmp_path / "k.zarr", config=config, quiet=True).resumed


def test_a_build_that_dies_in_finalize_resumes_identically(json_source, tmp_path, monkeypatch):
    """Killed after gathering the atoms, before the store is marked complete: the same
    command finalizes again and gives the uninterrupted build's arrays."""
    store_module = importlib.import_module("crystalgrid.store._writer")
    config = BuildConfig(samples_per_crystal=2, block_samples=24)
    full, cut = tmp_path / "full.zarr", tmp_path / "cut.zarr"
    build(json_source, full, config=config, quiet=True)
    real = store_module.checksum_whole_array

    def dies(group, name, **options):
        raise KeyboardInterrupt("killed in finalize")

    monkeypatch.setattr(store_module, "checksum_whole_array", dies)
    with pytest.raises(KeyboardInterrupt):
        build(json_source, cut, config=config, quiet=True)
    assert zarr.open_group(str(cut)).attrs["crystalgrid"]["state"] == "gridding"
    assert not (tmp_path / "cut.zarr.lock").exists()  # released on the way out
    with pytest.raises(BadInputError, match="unfinished build"):
        open_dataset(cut)
    monkeypatch.setattr(store_module, "checksum_whole_array", real)
    report = build(json_source, cut, config=config, quiet=True)
    assert report.resumed
    _assert_same(_arrays(full), _arrays(cut))
    assert verify(cut).ok


def test_a_full_disk_is_one_line_and_the_build_resumes_identically(json_source, tmp_path):
    """ENOSPC after N writes (every file write of the store, zarr's and the grid writer's,
    fails as on a full disk): one line, exit 2; with space again, the same command resumes
    to the uninterrupted build's arrays."""
    import errno

    local = importlib.import_module("zarr.storage._local")
    chunk_io = importlib.import_module("crystalgrid.store._chunks")
    # One worker: the build runs in this process, where the store's writes are patched.
    config = ["--repr", "repeated", "--samples", "3", "--block", "24", "--quiet", "--workers", "1"]
    full, cut = tmp_path / "full.zarr", tmp_path / "cut.zarr"
    runner = CliRunner()
    args = ["build", "--source", str(json_source), "--out", str(full), *config]
    assert runner.invoke(main, args).exit_code == 0
    real_put, real_write = local._put, chunk_io.write_atomic
    writes = {"n": 0}

    def disk_fills_up() -> None:
        writes["n"] += 1
        if writes["n"] > 150:  # past the crystal table, in the middle of the blocks
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def put(path, value, exclusive=False):
        disk_fills_up()
        return real_put(path, value, exclusive=exclusive)

    def write_file(path, data, **options):
        disk_fills_up()
        return real_write(path, data, **options)

    args = ["build", "--source", str(json_source), "--out", str(cut), *config]
    local._put, chunk_io.write_atomic = put, write_file
    try:
        result = runner.invoke(main, args)
    finally:
        local._put, chunk_io.write_atomic = real_put, real_write
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "No space left on device while writing the store" in result.output
    assert "run the same command to resume" in result.output
    done = zarr.open_group(str(cut))["_build/done"][:]
    assert 0 < done.sum() < len(done)  # it died in the middle of the blocks
    result = runner.invoke(main, args)
    assert result.exit_code == 0 and "resumed" in result.output
    _assert_same(_arrays(full), _arrays(cut))
    assert verify(cut).ok


def test_workers_auto_is_the_cores_available_at_most_eight():
    from crystalgrid.builder import AUTO_WORKERS_MAX, resolve_workers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert resolve_workers("auto") == min(cores, AUTO_WORKERS_MAX) >= 1
    assert resolve_workers(3) == resolve_workers("3") == 3
    for bad in (0, -1, "x", "1.5", None):
        with pytest.raises(ConfigError, match=r"^workers must be 'auto' or a whole number"):
            resolve_workers(bad)
    result = CliRunner().invoke(main, ["build", "--workers", "none", "-q"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    # The library names the argument; the command line names its flag.
    assert "error: --workers must be 'auto' or a whole number" in result.output


def test_the_report_says_where_the_time_went(json_source, tmp_path):
    from crystalgrid.build_timings import DRIVER, WORKER

    report = build(json_source, tmp_path / "t.zarr", quiet=True)
    assert set(report.timings) == set(DRIVER) | set(WORKER)
    assert all(seconds >= 0 for seconds in report.timings.values())
    assert report.timings["grids"] > 0 and report.timings["gridding"] <= report.seconds
    out = str(tmp_path / "u.zarr")
    args = ["build", "--source", str(json_source), "--out", out, "-q", "--workers", "1"]
    result = CliRunner().invoke(main, [*args, "--timings"])
    assert result.exit_code == 0
    assert "| grids |" in result.output and "| scan |" in result.output


def test_a_build_started_before_the_checksum_attribute_resumes_with_its_digest(
    json_source, tmp_path, monkeypatch
):
    """An unfinished store whose attributes predate ``checksum`` (BLAKE2b-64 digests) is
    resumed with BLAKE2b-64, so that verify agrees with every block, old and new."""
    from crystalgrid.store._checksums import chunk_digest, chunk_slices
    from crystalgrid.store._open import arrays_under

    build_module = importlib.import_module("crystalgrid.builder._driver")
    config = BuildConfig(representation="repeated", samples_per_crystal=3, block_samples=24)
    real = build_module._grid_block

    def dies_in_block_2(location, storage_options, block, config_dict, **kwargs):
        if block == 2:
            raise MemoryError("simulated worker death")
        return real(location, storage_options, block, config_dict, **kwargs)

    out = tmp_path / "old.zarr"
    monkeypatch.setattr(build_module, "_grid_block", dies_in_block_2)
    with pytest.raises(MemoryError):
        build(json_source, out, config=config, quiet=True)
    group = zarr.open_group(str(out), mode="r+")
    meta = dict(group.attrs["crystalgrid"])
    del meta["checksum"]  # as written before the attribute existed
    group.attrs["crystalgrid"] = meta
    done = group["_build/done"][:]
    for name in (p.lstrip("/") for p in arrays_under(group["checksums"], "")):
        array, recorded = group[name], group[f"checksums/{name}"]
        assert array.cdata_shape[0] == len(done)  # blocks of 24 samples: one chunk each
        for i in np.flatnonzero(done):
            recorded[i] = chunk_digest(array[chunk_slices(array, int(i))], "blake2b-64")
    monkeypatch.setattr(build_module, "_grid_block", real)
    report = build(json_source, out, config=config, quiet=True)
    assert report.resumed and 1 <= report.blocks_computed < report.blocks_total
    assert "checksum" not in open_dataset(out).attrs
    assert verify(out).ok


def test_a_store_gridded_by_the_earlier_density_method_is_not_resumed(json_source, tmp_path):
    """Stores record their density evaluation; one without the record (built before it) is
    refused by name rather than finished with grids computed another way."""
    out = tmp_path / "earlier.zarr"
    build(json_source, out, quiet=True)
    assert open_dataset(out).attrs["density_method"] == "separable-low-rank/1"
    group = zarr.open_group(str(out), mode="r+")
    meta = dict(group.attrs["crystalgrid"])
    del meta["density_method"]
    meta["fingerprint"] = "0" * 64  # the fingerprint of then did not cover the method
    group.attrs["crystalgrid"] = meta
    with pytest.raises(BadInputError, match=r"earlier crystalgrid \(density separable/1"):
        build(json_source, out, quiet=True)
    result = CliRunner().invoke(main, ["build", "--source", str(json_source), "--out", str(out)])
    assert result.exit_code != 0 and "--overwrite" in result.output
    assert len(result.output.strip().splitlines()) == 1
    report = build(json_source, out, overwrite=True, quiet=True)
    assert not report.resumed and verify(out).ok


def _a_bug_in_the_filters(monkeypatch, failing: int | None = None) -> None:
    """The filters raise ZeroDivisionError (a bug, as a library upgrade might bring) for every
    record, or for the first ``failing`` records they see."""
    from crystalgrid.filters import FilterConfig

    real = FilterConfig.check
    calls = {"n": 0}

    def check(self, structure):
        calls["n"] += 1
        if failing is None or calls["n"] <= failing:
            raise ZeroDivisionError("a bug")
        return real(self, structure)

    monkeypatch.setattr(FilterConfig, "check", check)


def test_unexpected_errors_past_the_share_stop_the_build(json_source, tmp_path, monkeypatch):
    """A bug that fails most records stops the build in one line, naming the first record's
    exception and where it was raised, before anything is written."""
    _a_bug_in_the_filters(monkeypatch)
    out = tmp_path / "s.zarr"
    with pytest.raises(CrystalgridError) as raised:
        build(json_source, out, config=BuildConfig(samples_per_crystal=1), quiet=True)
    message = str(raised.value)
    assert "\n" not in message
    assert "32 of 32 records (100.0%) failed with an unexpected error" in message
    assert "--max-error-share 0.001" in message and "ZeroDivisionError: a bug" in message
    assert "test_builder.py:" in message and "in check" in message
    assert not out.exists() and not (tmp_path / "s.zarr.lock").exists()
    args = ["build", "--source", str(json_source), "--out", str(out), "-q", "--workers", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "ZeroDivisionError" in result.output
    bad = CliRunner().invoke(main, [*args, "--max-error-share", "2"])
    assert bad.exit_code == 2 and "--max-error-share" in bad.output


def test_unexpected_errors_within_the_share_are_shown_apart(json_source, tmp_path, monkeypatch):
    """Below the share (1 of 32 records with --max-error-share 0.05) the build goes on; the
    error stays a reject with its type, message and place, and the summary and ``info`` show
    it apart from the input's reasons."""
    _a_bug_in_the_filters(monkeypatch, failing=1)
    out = tmp_path / "s.zarr"
    args = ["build", "--source", str(json_source), "--out", str(out), "-q", "--workers", "1"]
    result = CliRunner().invoke(main, [*args, "--samples", "1", "--max-error-share", "0.05"])
    assert result.exit_code == 0, result.output
    assert (
        "2 rejected (max_side 1, too_close 1); 1 left out by an unexpected error" in result.output
    )
    (error,) = [r for r in open_dataset(out).rejects() if r[1] == "error"]
    assert error[2].startswith("structures.json.gz") and "ZeroDivisionError: a bug" in error[2]
    assert "(raised at " in error[2] and "test_builder.py:" in error[2]
    info = CliRunner().invoke(main, ["info", str(out)]).output
    assert "rejected       2\n" in info and "\n  error" not in info
    assert "errors         1 left out by an unexpected error" in info
    assert f"  first        {error[0]}: {error[2]}" in info
