"""``crystalgrid build``, ``info``, ``upgrade``, ``splits`` and ``verify``: thin wrappers over
:mod:`crystalgrid.builder` and :mod:`crystalgrid.store`."""

from __future__ import annotations

import json
import sys
from collections import Counter

import click

from crystalgrid.cli.app import main, user_errors
from crystalgrid.errors import ConfigError


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--split takes three numbers like 0.8,0.1,0.1, got {text!r}") from None
    if len(parts) != 3:
        raise ConfigError(f"--split takes three numbers like 0.8,0.1,0.1, got {text!r}")
    return parts  # type: ignore[return-value]


@main.command()
@click.option(
    "--source",
    "source",
    default=None,
    metavar="PATH|URL",
    help="A fetch collection, CIF folder, CSV (material_id, cif) or JSON(.gz) of "
    "structure records; files and CIF folders may be fsspec URLs (s3://...). "
    "Default: the embedded demo (structures shipped with pymatgen).",
)
@click.option(
    "--repr",
    "representation",
    type=click.Choice(["single", "repeated", "both"]),
    default="repeated",
    show_default=True,
    help="Which representation to build.",
)
@click.option(
    "--out",
    default=None,
    metavar="PATH|URL",
    help="Store path (with --repr both: a folder for single.zarr and repeated.zarr). "
    "Default: ./crystalgrid-data/<repr>.zarr. fsspec URLs (s3://...) work.",
)
@click.option(
    "--samples", "samples", type=int, default=3, show_default=True, help="Samples per crystal."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seeds rotations, offsets, splits."
)
@click.option(
    "--rotate/--no-rotate", default=None, help="Rotate samples (default: single yes, repeated no)."
)
@click.option(
    "--max-side",
    type=float,
    default=10.0,
    show_default=True,
    help="Keep cells whose three lattice lengths are all below this (Å).",
)
@click.option(
    "--min-distance",
    type=float,
    default=0.5,
    show_default=True,
    help="Reject cells with two atoms closer than this (Å).",
)
@click.option(
    "--split",
    "split",
    default="0.8,0.1,0.1",
    show_default=True,
    help="Train,val,test fractions of crystals.",
)
@click.option(
    "--split-by",
    type=click.Choice(["auto", "random", "composition", "chemsys", "source"]),
    default="auto",
    show_default=True,
    help="random: by material id; composition/chemsys: all crystals of one reduced formula "
    "(element set) in one split; source: the source's own (a folder of train/val/test.csv); "
    "auto: source when the source has splits, else random.",
)
@click.option(
    "--splits",
    "split_file",
    default=None,
    metavar="FILE",
    help="Take every crystal's split from a split file (crystalgrid splits STORE --out FILE); "
    "crystals it does not list are left out.",
)
@click.option(
    "--chunk",
    "chunk_samples",
    type=int,
    default=24,
    show_default=True,
    help="Samples per chunk (match your batch size).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Density precision.",
)
@click.option(
    "--codec",
    type=click.Choice(["lz4", "zstd", "lz4hc"]),
    default="lz4",
    show_default=True,
    help="Blosc compressor of the density.",
)
@click.option(
    "--block",
    "block_samples",
    type=int,
    default=240,
    show_default=True,
    help="Samples per Dask task (rounded to whole chunks and crystals).",
)
@click.option(
    "--workers",
    default="auto",
    show_default=True,
    help="Local workers: a number, or auto (the cores available, at most 8). The first runs "
    "in this process, the others in their own.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="A dask.distributed scheduler (tcp://host:8786) instead of local workers.",
)
@click.option(
    "--licence",
    default=None,
    help="Licence of the source data, recorded in the store (e.g. CC-BY-4.0 for MP data).",
)
@click.option(
    "--citation", default=None, help="How to cite the source data, recorded in the store."
)
@click.option(
    "--max-error-share",
    type=click.FloatRange(0, 1),
    default=0.001,
    show_default=True,
    help="Stop when more than this share of the records fail to parse or filter with an "
    "unexpected error (a bug, not the input's fault; recorded as rejects with reason error).",
)
@click.option("--overwrite", is_flag=True, help="Replace a store built from another configuration.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--timings", is_flag=True, help="Print the seconds of each stage of the build.")
@user_errors
def build(
    source,
    representation,
    out,
    samples,
    seed,
    rotate,
    max_side,
    min_distance,
    split,
    split_by,
    split_file,
    chunk_samples,
    dtype,
    codec,
    block_samples,
    workers,
    scheduler,
    licence,
    citation,
    max_error_share,
    overwrite,
    quiet,
    timings,
) -> None:
    """Build the voxel-grid dataset (resumes an interrupted build with the same command)."""
    from crystalgrid.builder import BuildConfig, build_representations, default_out
    from crystalgrid.filters import FilterConfig
    from crystalgrid.sources import open_source

    reprs = ["single", "repeated"] if representation == "both" else [representation]
    stated = {k: v for k, v in (("licence", licence), ("citation", citation)) if v}
    if stated and source is None:
        raise ConfigError(
            "the demo set's licence and citation are fixed; drop --licence/--citation"
        )
    structures = open_source(source, **stated)
    config = BuildConfig(
        samples_per_crystal=samples,
        seed=seed,
        rotate=rotate,
        split_fractions=_fractions(split),
        split_by=split_by,
        chunk_samples=chunk_samples,
        block_samples=block_samples,
        dtype=dtype,
        codec=codec,
        filters=FilterConfig(max_side=max_side, min_distance=min_distance),
    )
    if out is None:
        outs = {rep: default_out(rep) for rep in reprs}
    elif representation == "both":
        outs = {rep: f"{out.rstrip('/')}/{rep}.zarr" for rep in reprs}
    else:
        outs = {representation: out}
    reports = build_representations(
        structures,
        outs,
        config=config,
        workers=workers,
        scheduler=scheduler,
        overwrite=overwrite,
        quiet=quiet,
        splits=split_file,
        max_error_share=max_error_share,
    )
    for report in reports:
        click.echo(report.summary())
        if timings and report.timings:
            click.echo(report.timings.table())


@main.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON.")
@user_errors
def info(path: str, as_json: bool) -> None:
    """Counts, splits, rejects by reason and attributes of a dataset."""
    from crystalgrid.store import describe, open_store

    if as_json:
        _, attrs = open_store(path)
        click.echo(json.dumps(attrs, indent=2, sort_keys=True))
        return
    click.echo(describe(path))


@main.command()
@click.argument("path")
@user_errors
def upgrade(path: str) -> None:
    """Name the dimensions of a store built before they were named (for xarray), in place."""
    from crystalgrid.store import upgrade as upgrade_store

    changed = upgrade_store(path)
    if changed:
        click.echo(f"{path}: named the dimensions of {len(changed)} arrays; metadata consolidated")
    else:
        click.echo(f"{path}: already has named dimensions; nothing to do")


@main.command()
@click.argument("path")
@click.option(
    "--out", default=None, metavar="FILE", help="Write the split file here (default: stdout)."
)
@user_errors
def splits(path: str, out: str | None) -> None:
    """Export which crystals are in train, val and test, for build --splits FILE."""
    from crystalgrid.dataset import open_dataset
    from crystalgrid.splits import split_document, write_split_file

    dataset = open_dataset(path)
    ids = dataset.split_ids()
    about = {
        "store": path,
        "split_by": dataset.meta.split_by,
        "source": dataset.meta.source,
        "source_fingerprint": dataset.meta.source_fingerprint,
    }
    if out is None:
        click.echo(json.dumps(split_document(ids, about), indent=1))
        return
    write_split_file(out, ids, about)
    counts = ", ".join(f"{name} {len(v)}" for name, v in ids.items())
    click.echo(f"{out}: {counts} crystals")


@main.command()
@click.argument("path")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when the dataset is sound.")
@user_errors
def verify(path: str, quiet: bool) -> None:
    """Check every chunk is present and matches its build-time checksum (exit 1 if not)."""
    from crystalgrid.store import verify as run_verify

    report = run_verify(path)
    if report.ok:
        if not quiet:
            click.echo(f"{path}: OK, {report.chunks_checked} chunks match their checksums")
        return
    kinds = Counter(p.split(" ")[0] for p in report.problems)
    for problem in report.problems[:20]:
        click.echo(f"{path}: {problem}", err=True)
    if len(report.problems) > 20:
        click.echo(f"... and {len(report.problems) - 20} more", err=True)
    summary = ", ".join(f"{n} {k}" for k, n in kinds.items())
    click.echo(f"{path}: FAILED ({summary}; {report.chunks_checked} chunks checked)", err=True)
    sys.exit(1)
