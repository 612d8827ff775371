"""``crystalgrid fetch --optimade``: against a local OPTIMADE server on 127.0.0.1 that pages by
offset or by cursor, stalls, fails for a while, or answers an error document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import crystalgrid
from crystalgrid.builder import BuildConfig
from crystalgrid.cli import main
from crystalgrid.errors import BadInputError
from crystalgrid.optimade import ProviderError, fetch_optimade, resolve_provider
from crystalgrid.sources import CollectionSource, Rejected, open_source

if __package__:
    from .optimade_server import FakeOptimade, entries_from
else:
    from optimade_server import FakeOptimade, entries_from

FAST = {"timeout_s": 2.0, "retries": 1, "backoff_s": 0.01, "quiet": True}


@pytest.fixture
def server(demo_records, monkeypatch):
    fake = FakeOptimade(entries_from(demo_records)).start()
    monkeypatch.setenv("CRYSTALGRID_OPTIMADE_PROVIDERS", f"{fake.url}/providers/v1/links")
    yield fake
    fake.stop()


def ids(path: Path) -> list[str]:
    return [r.material_id for r in open_source(path).records()]


def test_offset_paging_fetches_every_entry_and_records_provenance(server, tmp_path):
    out = tmp_path / "c"
    report = fetch_optimade(out, f"{server.url}/offset", page_size=7, **FAST)
    assert report.complete and report.stopped is None
    assert report.count == len(server.entries) == 32 and report.rejected == 2
    assert report.pages == 5  # 7 + 7 + 7 + 7 + 4
    source = open_source(out)
    assert isinstance(source, CollectionSource)
    assert ids(out) == [e["id"] for e in server.entries]
    rejected = {r.material_id: r.reason for r in source.records() if isinstance(r, Rejected)}
    assert rejected == {"partial-1": "disordered", "mismatched-1": "unparsable"}
    provenance = source.provenance()
    assert provenance["source"] == "optimade"
    assert provenance["base_url"] == f"{server.url}/offset"
    assert provenance["licence"] == "CC-BY-4.0"
    assert provenance["api_version"] == "1.1.0"
    assert "OPTIMADE" in provenance["citation"]


def test_a_short_name_is_looked_up_and_cursor_paging_gives_the_same_entries(server, tmp_path):
    assert resolve_provider("cursor").base_url == f"{server.url}/cursor"
    report = fetch_optimade(tmp_path / "c", "cursor", page_size=5, **FAST)
    assert report.complete and report.pages == 7
    assert ids(tmp_path / "c") == [e["id"] for e in server.entries]
    assert any("page_cursor=" in r for r in server.requests)
    provenance = open_source(tmp_path / "c").provenance()
    assert provenance["provider"] == "cursor" and provenance["title"] == "Fake provider cursor"


def test_the_filter_reaches_the_provider(server, tmp_path):
    query = "nelements=2 AND nsites<=4"
    report = fetch_optimade(tmp_path / "c", "offset", filter=query, page_size=3, **FAST)
    expected = [
        e["id"]
        for e in server.entries
        if e["attributes"]["nelements"] == 2 and e["attributes"]["nsites"] <= 4
    ]
    assert report.complete and expected and ids(tmp_path / "c") == expected
    assert open_source(tmp_path / "c").provenance()["filter"] == query


def test_an_error_document_is_one_line(server, tmp_path):
    with pytest.raises(ProviderError) as info:
        fetch_optimade(tmp_path / "c", "offset", filter="bogus > 1", **FAST)
    message = str(info.value)
    assert "HTTP 400" in message and "cannot parse 'bogus > 1'" in message and "\n" not in message
    assert not (tmp_path / "c").exists()


def test_a_stalled_page_stops_the_fetch_and_the_same_call_resumes(server, tmp_path):
    out = tmp_path / "c"
    stalled = fetch_optimade(out, "stall", page_size=10, **{**FAST, "timeout_s": 0.3})
    assert not stalled.complete
    assert "no answer within 0.3 s after 2 tries" in stalled.stopped
    assert stalled.pages == 1 and stalled.count == 10
    server.stall_s = 0.0
    resumed = fetch_optimade(out, "stall", page_size=10, **{**FAST, "timeout_s": 0.3})
    assert resumed.complete and resumed.pages == 4 and resumed.pages_fetched == 3
    assert ids(out) == [e["id"] for e in server.entries]
    again = fetch_optimade(out, "stall", page_size=10, **FAST)
    assert again.complete and again.pages_fetched == 0


def test_server_errors_are_retried(server, tmp_path):
    report = fetch_optimade(tmp_path / "c", "flaky", page_size=10, **{**FAST, "retries": 3})
    assert report.complete and report.count == 32
    assert sum("page_offset=10" in r for r in server.requests) == 3


def test_a_limit_and_a_different_query_on_resume(server, tmp_path):
    out = tmp_path / "c"
    report = fetch_optimade(out, "offset", page_size=3, limit=5, **FAST)
    assert report.complete and report.count == 5
    with pytest.raises(BadInputError, match=r"different query \(differs in: filter\)"):
        fetch_optimade(out, "offset", filter="nsites<=4", page_size=3, limit=5, **FAST)


def test_unknown_providers_and_providers_of_many_databases(server):
    with pytest.raises(BadInputError, match=r"unknown OPTIMADE provider 'nope' \(the list names"):
        resolve_provider("nope")
    with pytest.raises(BadInputError, match="has 4 databases"):
        resolve_provider("many")


def test_a_dataset_builds_from_the_collection(server, tmp_path):
    fetch_optimade(tmp_path / "c", "offset", page_size=10, **FAST)
    out = tmp_path / "d.zarr"
    crystalgrid.build(tmp_path / "c", out, config=BuildConfig(samples_per_crystal=1), quiet=True)
    dataset = crystalgrid.open_dataset(out)
    assert dataset.meta.source["source"] == "optimade"
    assert dataset.meta.licence == "CC-BY-4.0"
    reasons = {reason for _, reason, _ in dataset.rejects()}
    assert {"disordered", "unparsable"} <= reasons
    shown = CliRunner().invoke(main, ["info", str(out)])
    assert shown.exit_code == 0, shown.output
    assert f"provider     offset {server.url}/offset" in shown.output
    assert "licence        CC-BY-4.0" in shown.output


def test_the_command_line(server, tmp_path):
    runner = CliRunner()
    out = tmp_path / "c"
    args = ["fetch", "--optimade", "offset", "--filter", "nsites<=4", "--out", str(out)]
    result = runner.invoke(main, [*args, "--page-size", "5", "--timeout", "2"])
    assert result.exit_code == 0, result.output
    assert "entries in" in result.output and "licence: CC-BY-4.0" in result.output
    manifest = json.loads((out / "collection.json").read_text())
    assert manifest["complete"] and manifest["query"]["filter"] == "nsites<=4"
    bad = runner.invoke(main, ["fetch", "--optimade", "offset", "--max-sites", "4", "--out", "x"])
    assert bad.exit_code == 2 and "belong to the Materials Project fetch" in bad.output
    refused_out = tmp_path / "refused"
    refused = runner.invoke(
        main, ["fetch", "--optimade", "offset", "--filter", "x ~ 1", "--out", str(refused_out)]
    )
    assert refused.exit_code == 2 and "HTTP 400" in refused.output
    assert not refused_out.exists()  # nothing half-written
