"""CLI verbs (registered on ``crystalgrid.cli.main``): ``crystalgrid fetch``.

A thin wrapper over :func:`crystalgrid.mp.fetch`; mp-api is imported only when the
verb runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from crystalgrid.cli.app import main, user_errors


@main.command("fetch")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Collection directory (new, empty, or one to resume). "
    "[default: ./crystalgrid-data/materials-project]",
)
@click.option(
    "--api-key",
    default=None,
    metavar="KEY",
    help="Materials Project API key. Prefer the MP_API_KEY environment variable "
    "(a key on the command line ends up in the shell history).",
)
@click.option(
    "--max-sites",
    type=click.IntRange(min=1),
    default=None,
    help="Keep materials with at most this many sites in the cell.",
)
@click.option(
    "--elements",
    default=None,
    metavar="SYMBOLS",
    help="Keep materials that contain all of these elements, e.g. Fe,O.",
)
@click.option(
    "--max-ehull",
    type=click.FloatRange(min=0),
    default=None,
    metavar="EV",
    help="Keep materials at most this far above the convex hull (eV/atom).",
)
@click.option(
    "--ids",
    "ids_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Fetch the material ids listed in FILE (one per line, or a CSV's first column).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Fetch at most N materials (a quick try).",
)
@click.option("--include-gnome", is_flag=True, help="Include GNoME entries (left out by default).")
@click.option(
    "--page-size",
    type=click.IntRange(1, 1000),
    default=None,
    help="Materials per request and per page file. [default: 250]",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Wait at most this long for a connection and for each answer. [default: 20]",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=None,
    help="Retries per request (rate limits, server errors, timeouts), with backoff. [default: 5]",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@user_errors
def fetch_command(
    out_dir: Path | None,
    api_key: str | None,
    max_sites: int | None,
    elements: str | None,
    max_ehull: float | None,
    ids_file: Path | None,
    limit: int | None,
    include_gnome: bool,
    page_size: int | None,
    timeout_s: float | None,
    retries: int | None,
    quiet: bool,
) -> None:
    """Download Materials Project structures into a local collection.

    Needs a Materials Project API key in MP_API_KEY; the endpoint is mp-api's (set
    MP_API_ENDPOINT to change it). Running the same command again resumes an interrupted
    fetch and downloads only the missing pages. Exit status: 0 when the collection is
    complete, 1 when some pages failed (the rest is saved), 2 for a usage or setup error.

    The data is the Materials Project's, licensed CC-BY 4.0: cite Jain et al.,
    APL Materials 1, 011002 (2013).
    """
    from crystalgrid import mp

    report = mp.fetch(
        out_dir if out_dir is not None else mp.DEFAULT_OUT,
        api_key=api_key,
        max_sites=max_sites,
        elements=elements,
        max_ehull=max_ehull,
        ids=mp.read_ids(ids_file) if ids_file is not None else None,
        limit=limit,
        include_gnome=include_gnome,
        page_size=page_size if page_size is not None else mp.DEFAULT_PAGE_SIZE,
        timeout_s=timeout_s,
        retries=retries,
        quiet=quiet,
    )
    for failure in report.failed:
        click.echo(f"crystalgrid: page {failure.index} failed: {failure.reason}", err=True)
    if report.stopped:
        click.echo(f"crystalgrid: {report.stopped}", err=True)
    if report.missing_ids and not quiet:
        shown = ", ".join(report.missing_ids[:5]) + (", ..." if len(report.missing_ids) > 5 else "")
        click.echo(
            f"crystalgrid: {len(report.missing_ids)} requested ids were not returned "
            f"(unknown or deprecated): {shown}",
            err=True,
        )
    if not report.complete:
        saved = report.pages - report.pages_missing
        click.echo(
            f"crystalgrid: error: {report.pages_missing} of {report.pages} pages could not be "
            f"fetched; the other {saved} ({report.count} materials) are saved in "
            f"{report.path}; run the same command again to fetch the rest",
            err=True,
        )
        sys.exit(1)
    if not quiet:
        click.echo(
            f"{report.count} materials in {report.path} ({report.pages} pages, "
            f"{report.pages_fetched} fetched now, {report.pages_reused} already there; "
            f"{report.docs_fetched} docs in {report.download_seconds:.1f} s, "
            f"{report.docs_per_second:.0f} docs/s); Materials Project database "
            f"{report.database_version or 'unknown'}. Data CC-BY 4.0: cite Jain et al., "
            "APL Materials 1, 011002 (2013)."
        )
