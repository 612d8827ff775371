"""The dataset verbs (build, info, verify): one-line errors with exit status 2, and a build of
both representations from one scan, shown by info."""

from __future__ import annotations

import json

import click
import zarr
from click.testing import CliRunner

from crystalgrid.cli import main


def test_cli_errors_are_one_line_with_status_2(tmp_path, json_source):
    runner = CliRunner()
    cases = [
        ["build", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o.zarr")],
        [
            "build",
            "--source",
            str(json_source),
            "--split",
            "0.5,0.5",
            "--out",
            str(tmp_path / "o.zarr"),
        ],
        ["info", str(tmp_path / "nothing.zarr")],
        ["verify", str(tmp_path / "nothing.zarr")],
    ]
    for args in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.count("\n") == 1 and result.output.startswith("crystalgrid: error: ")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("not a store")
    result = runner.invoke(
        main, ["build", "--source", str(json_source), "--out", str(tmp_path / "other"), "-q"]
    )
    assert result.exit_code == 2 and "not a crystalgrid dataset" in result.output


def test_cli_build_both_and_info(tmp_path, json_source):
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "build",
            "--source",
            str(json_source),
            "--repr",
            "both",
            "--out",
            str(tmp_path / "d"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "single.zarr").is_dir() and (tmp_path / "d" / "repeated.zarr").is_dir()
    # One scan serves both: the same crystals, in the same order and splits.
    single, repeated = (
        zarr.open_group(str(tmp_path / "d" / f"{r}.zarr")) for r in ("single", "repeated")
    )
    assert (
        single["crystals/material_id"][:].tolist() == repeated["crystals/material_id"][:].tolist()
    )
    assert single.attrs["crystalgrid"]["splits"] == repeated.attrs["crystalgrid"]["splits"]
    assert result.output.count("samples of 30 crystals") == 2
    info = runner.invoke(main, ["info", str(tmp_path / "d" / "single.zarr")])
    assert "max_side" in info.output and "train" in info.output and "single" in info.output
    as_json = json.loads(
        runner.invoke(main, ["info", "--json", str(tmp_path / "d" / "repeated.zarr")]).output
    )
    assert as_json["rejects"] == {"max_side": 1, "too_close": 1} and as_json["n_crystals"] == 30


def test_the_command_line_names_flags_where_the_library_names_arguments():
    from crystalgrid.cli.app import with_flags

    @click.command()
    @click.option("--max-sites", type=int)
    @click.option("--elements")
    @click.option("--out")
    def verb(max_sites, elements, out):
        messages = [
            "max_sites must be at least 1, got 0",
            "elements: not element symbols: Xx",
            "elements is empty",
            "bad range (max_sites must be at least 1)",
            "the output folder is out of space",  # a word, not the argument: unchanged
        ]
        click.echo("\n".join(with_flags(m) for m in messages))

    result = CliRunner().invoke(verb, [])
    assert result.output.splitlines() == [
        "--max-sites must be at least 1, got 0",
        "--elements: not element symbols: Xx",
        "--elements is empty",
        "bad range (--max-sites must be at least 1)",
        "the output folder is out of space",
    ]
