"""Splits: random, grouped by composition or element set, a source's own, and split files."""

from __future__ import annotations

import csv
import itertools
import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from crystalgrid import BuildConfig, ConfigError, CrystalgridError, build, open_dataset
from crystalgrid.cli import main
from crystalgrid.splits import (
    assign,
    group_key,
    grouped_split,
    random_split,
    read_split_file,
    split_file_digest,
)

PAIRS = [("Na", "Cl"), ("K", "Br"), ("Mg", "O"), ("Ca", "S"), ("Li", "F"), ("Cs", "I")]


def polymorphs() -> list[tuple[str, object]]:
    """18 structures: 6 compositions (A B and A B2), three cells each."""
    from pymatgen.core import Lattice, Structure

    out = []
    for a, b in PAIRS:
        for k, side in enumerate((4.2, 4.6, 5.0)):
            if k < 2:
                s = Structure(Lattice.cubic(side), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
            else:  # the same elements, another formula: one chemical system, two compositions
                coords = [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.75]]
                s = Structure(Lattice.cubic(side), [a, b, b], coords)
            out.append((f"{a}{b}-{k}", s))
    return out


@pytest.fixture
def poly_json(tmp_path):
    path = tmp_path / "poly.json"
    records = [{"material_id": m, "structure": s.as_dict()} for m, s in polymorphs()]
    path.write_text(json.dumps(records))
    return path


def test_group_keys():
    assert group_key(np.array([11, 17, 11, 17]), "composition") == "11:1 17:1"
    assert group_key(np.array([8, 12, 8]), "composition") == "8:2 12:1"
    assert group_key(np.array([8, 12, 8]), "chemsys") == "8-12"


def test_a_random_split_is_stable_and_exact():
    ids = [f"mp-{i}" for i in range(100)]
    split = random_split(ids, 0, (0.8, 0.1, 0.1))
    assert Counter(split.tolist()) == {0: 80, 1: 10, 2: 10}
    # A function of the ids and the seed, not of the source's order.
    reordered = ids[::-1]
    again = dict(zip(reordered, random_split(reordered, 0, (0.8, 0.1, 0.1)).tolist(), strict=True))
    assert again == dict(zip(ids, split.tolist(), strict=True))
    assert not np.array_equal(split, random_split(ids, 1, (0.8, 0.1, 0.1)))


def test_a_grouped_split_keeps_groups_whole_and_fractions_close():
    rng = np.random.default_rng(0)
    keys = [f"g{int(k)}" for k in rng.integers(0, 400, 2000)]
    split = grouped_split(keys, 3, (0.8, 0.1, 0.1))
    for key in set(keys):
        assert len({int(s) for k, s in zip(keys, split, strict=True) if k == key}) == 1
    counts = np.bincount(split, minlength=3) / len(keys)
    np.testing.assert_allclose(counts, (0.8, 0.1, 0.1), atol=0.01)
    np.testing.assert_array_equal(split, grouped_split(keys, 3, (0.8, 0.1, 0.1)))
    assert not np.array_equal(split, grouped_split(keys, 4, (0.8, 0.1, 0.1)))


def test_assign_by_table_and_by_source():
    ids, numbers = ["a", "b", "c"], [np.array([1])] * 3
    codes, keep = assign(
        ids,
        numbers,
        [None] * 3,
        method="random",
        seed=0,
        fractions=(1, 0, 0),
        table={"a": "test", "c": "val"},
    )
    assert codes[0] == 2 and codes[2] == 1 and keep.tolist() == [True, False, True]
    codes, _ = assign(
        ids, numbers, ["val", "train", "test"], method="auto", seed=0, fractions=(1, 0, 0)
    )
    assert codes.tolist() == [1, 0, 2]
    with pytest.raises(ConfigError, match="needs a split for every structure"):
        assign(ids, numbers, [None] * 3, method="source", seed=0, fractions=(1, 0, 0))


@pytest.mark.parametrize("by", ["composition", "chemsys"])
def test_a_grouped_build_never_puts_one_group_in_two_splits(poly_json, tmp_path, by):
    out = tmp_path / f"{by}.zarr"
    config = BuildConfig(
        representation="single",
        samples_per_crystal=1,
        split_fractions=(0.5, 0.25, 0.25),
        split_by=by,
    )
    build(poly_json, out, config=config, quiet=True)
    ds = open_dataset(out)
    assert ds.attrs["split_by"] == by
    table = ds.crystal_table()
    codes = ds.group["crystals/split"][:]
    splits_of: dict[str, set[int]] = {}
    for c, (a, b) in enumerate(itertools.pairwise(table["site_offset"])):
        splits_of.setdefault(group_key(table["number"][a:b], by), set()).add(int(codes[c]))
    assert all(len(s) == 1 for s in splits_of.values())
    assert len(set(codes.tolist())) == 3  # every split got groups


def _write_cdvae(folder, rows_by_split):
    from pymatgen.io.cif import CifWriter

    folder.mkdir()
    structures = dict(polymorphs())
    for split, ids in rows_by_split.items():
        with (folder / f"{split}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["", "material_id", "cif", "heat_ref"])
            for i, m in enumerate(ids):
                writer.writerow([i, m, str(CifWriter(structures[m])), 0.5])


def test_a_cdvae_folder_keeps_its_splits(tmp_path):
    ids = [m for m, _ in polymorphs()]
    layout = {"train": ids[:10], "val": ids[10:14], "test": ids[14:]}
    _write_cdvae(tmp_path / "bench", layout)
    out = tmp_path / "bench.zarr"
    config = BuildConfig(representation="single", samples_per_crystal=2)
    build(tmp_path / "bench", out, config=config, quiet=True)
    ds = open_dataset(out)
    assert ds.split_ids() == layout  # every file's ids, in file order
    assert ds.attrs["split_by"] == "source" and ds.meta.source["kind"] == "csv-splits"
    assert ds.splits == {"train": 20, "val": 8, "test": 8}
    # The splits can still be redrawn on purpose.
    redrawn = tmp_path / "redrawn.zarr"
    build(
        tmp_path / "bench",
        redrawn,
        config=BuildConfig(representation="single", samples_per_crystal=1, split_by="random"),
        quiet=True,
    )
    assert open_dataset(redrawn).attrs["split_by"] == "random"


def test_a_cdvae_folder_without_a_file_is_one_line(tmp_path):
    ids = [m for m, _ in polymorphs()]
    _write_cdvae(tmp_path / "bench", {"train": ids[:10], "test": ids[10:]})
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            str(tmp_path / "bench"),
            "--out",
            str(tmp_path / "o.zarr"),
            "--quiet",
        ],
    )
    assert result.exit_code == 2
    assert "val.csv missing" in result.output and len(result.output.strip().splitlines()) == 1


def test_split_files_carry_a_split_to_another_store(poly_json, tmp_path):
    runner = CliRunner()
    first = tmp_path / "first.zarr"
    args = ["build", "--source", str(poly_json), "--repr", "single", "--samples", "1", "--quiet"]
    result = runner.invoke(
        main, [*args, "--out", str(first), "--split-by", "composition", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    ids_file = tmp_path / "ids.json"
    result = runner.invoke(main, ["splits", str(first), "--out", str(ids_file)])
    assert result.exit_code == 0 and "ids.json: train" in result.output
    exported = json.loads(ids_file.read_text())
    assert exported["format"] == "crystalgrid-splits/1" and exported["split_by"] == "composition"
    assert (
        json.loads(runner.invoke(main, ["splits", str(first)]).output)["train"]
        == (exported["train"])
    )
    # A store of the other representation, another seed, takes the same split...
    second = tmp_path / "second.zarr"
    result = runner.invoke(
        main,
        [
            "build",
            "--source",
            str(poly_json),
            "--repr",
            "repeated",
            "--samples",
            "2",
            "--seed",
            "9",
            "--quiet",
            "--out",
            str(second),
            "--splits",
            str(ids_file),
        ],
    )
    assert result.exit_code == 0, result.output
    assert open_dataset(second).split_ids() == open_dataset(first).split_ids()
    assert open_dataset(second).attrs["split_file"]["sha256"] == split_file_digest(
        read_split_file(ids_file)
    )
    # ...and crystals the file does not list are left out, with their reason.
    exported["test"] = exported["test"][1:]
    ids_file.write_text(json.dumps(exported))
    third = tmp_path / "third.zarr"
    build(
        poly_json,
        third,
        config=BuildConfig(representation="single", samples_per_crystal=1),
        splits=ids_file,
        quiet=True,
    )
    assert open_dataset(third).attrs["rejects"] == {"not_in_splits": 1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not a readable split file"),
        ('{"train": ["a"]}', "not a split file"),
        ('{"format": "crystalgrid-splits/1", "train": ["a"], "test": ["a"]}', "listed in train"),
        ('{"format": "crystalgrid-splits/1", "train": "a"}', "must be a list"),
        ('{"format": "crystalgrid-splits/1"}', "lists no ids"),
    ],
)
def test_bad_split_files_are_one_line(poly_json, tmp_path, content, message):
    path = tmp_path / "ids.json"
    path.write_text(content)
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            str(poly_json),
            "--out",
            str(tmp_path / "o.zarr"),
            "--splits",
            str(path),
            "-q",
        ],
    )
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(CrystalgridError, match="split file not found"):
        read_split_file(tmp_path / "absent.json")
