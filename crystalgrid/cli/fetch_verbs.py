"""CLI verbs (registered on ``crystalgrid.cli.main``): ``crystalgrid fetch``.

A thin wrapper over :func:`crystalgrid.mp.fetch` (mp-api is imported only when the verb runs)
and, with ``--optimade``, over :func:`crystalgrid.optimade.fetch_optimade`.
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
    help="Wait at most this long for a connection and for each answer. "
    "[default: 20; 30 with --optimade]",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=None,
    help="Retries per request (rate limits, server errors, timeouts), with backoff. [default: 5]",
)
@click.option(
    "--optimade",
    default=None,
    metavar="NAME|URL",
    help="Fetch from an OPTIMADE provider instead: its short name in the OPTIMADE providers "
    "list (alexandria, oqmd, jarvis, cod, ...) or a database's base URL.",
)
@click.option(
    "--filter",
    "optimade_filter",
    default=None,
    metavar="FILTER",
    help="With --optimade: an OPTIMADE filter, e.g. 'nelements=2 AND nsites<=20'.",
)
@click.option(
    "--providers-url",
    default=None,
    metavar="URL",
    help="With --optimade NAME: the providers list to look NAME up in. "
    "[default: https://providers.optimade.org/v1/links]",
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
    optimade: str | None,
    optimade_filter: str | None,
    providers_url: str | None,
    quiet: bool,
) -> None:
    """Download structures (the Materials Project, or any OPTIMADE provider) into a collection.

    Needs a Materials Project API key in MP_API_KEY; the endpoint is mp-api's (set
    MP_API_ENDPOINT to change it). Running the same command again resumes an interrupted
    fetch and downloads only the missing pages. Exit status: 0 when the collection is
    complete, 1 when some pages failed (the rest is saved), 2 for a usage or setup error.

    The data is the Materials Project's, licensed CC-BY 4.0: cite Jain et al.,
    APL Materials 1, 011002 (2013).

    With --optimade, structures come from any OPTIMADE provider (no key), filtered by
    --filter; the collection records the provider, the query and the licence it states.
    """
    if optimade is not None:
        mp_only = {
            "--api-key": api_key,
            "--max-sites": max_sites,
            "--elements": elements,
            "--max-ehull": max_ehull,
            "--ids": ids_file,
            "--include-gnome": include_gnome or None,
        }
        given = [flag for flag, value in mp_only.items() if value is not None]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} belong to the Materials Project fetch; with --optimade, "
                'say it in --filter (e.g. \'nsites<=20 AND elements HAS ALL "Fe","O"\')'
            )
        _fetch_optimade(
            optimade,
            out_dir,
            optimade_filter,
            page_size=page_size,
            limit=limit,
            timeout_s=timeout_s,
            retries=retries,
            providers_url=providers_url,
            quiet=quiet,
        )
        return
    if optimade_filter is not None or providers_url is not None:
        raise click.UsageError("--filter and --providers-url go with --optimade")
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


def _fetch_optimade(
    provider: str,
    out_dir: Path | None,
    optimade_filter: str | None,
    *,
    page_size: int | None,
    limit: int | None,
    timeout_s: float | None,
    retries: int | None,
    providers_url: str | None,
    quiet: bool,
) -> None:
    from crystalgrid import optimade

    default = Path("crystalgrid-data") / f"optimade-{_slug(provider)}"
    report = optimade.fetch_optimade(
        out_dir if out_dir is not None else default,
        provider,
        filter=optimade_filter,
        page_size=page_size if page_size is not None else optimade.DEFAULT_PAGE_SIZE,
        limit=limit,
        timeout_s=timeout_s if timeout_s is not None else 30.0,
        retries=retries if retries is not None else 5,
        providers_url=providers_url,
        quiet=quiet,
    )
    if report.stopped:
        click.echo(
            f"crystalgrid: error: {report.stopped}; the {report.pages} pages before it "
            f"({report.count} entries) are saved in {report.path}; run the same command "
            "again to go on",
            err=True,
        )
        sys.exit(1)
    if not quiet:
        where = report.provider
        click.echo(
            f"{report.count} entries in {report.path} ({report.rejected} kept as rejects: "
            f"partial occupancy, no cell, ...; {report.pages} pages, {report.pages_fetched} "
            f"fetched now) from {where.get('title')} ({where.get('base_url')}); licence: "
            f"{where.get('licence') or 'not stated by the provider'}"
        )


def _slug(text: str) -> str:
    """A folder name from a provider's name or URL."""
    from urllib.parse import urlsplit

    if "://" in text:
        parts = urlsplit(text)
        text = f"{parts.hostname}{parts.path}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "provider"
