"""A local OPTIMADE server for the tests: a real HTTP server (stdlib ``ThreadingHTTPServer``) on
127.0.0.1 that answers the requests ``crystalgrid fetch --optimade`` makes, in the shapes the
OPTIMADE v1 specification gives them.

It serves a providers list (``/providers/v1/links``), each provider's index database
(``/<provider>-index/v1/links``, one ``child`` link) and databases (``/<db>/v1/info``,
``/<db>/v1/structures``) of real structures (pymatgen's demo set), each database paging its own
way:

- ``offset``: ``page_offset`` / ``page_limit`` in ``links.next``;
- ``cursor``: an opaque ``page_cursor`` token in ``links.next`` (the way cursor-paging providers
  do it); an unknown token is refused with an error document;
- ``stall``: as ``offset``, but the second page answers only after ``stall_s`` seconds;
- ``flaky``: as ``offset``, but its first ``flaky_failures`` requests of the second page get
  HTTP 503.

``filter`` takes clauses ``field op number`` (``op`` one of ``= < <= > >=``) joined by ``AND`` on
``nelements`` and ``nsites``; anything else is refused with HTTP 400 and an OPTIMADE error
document. Two extra entries are not usable crystals: one with a partially occupied site, one
whose arrays differ in length.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = ["DATABASES", "FakeOptimade", "entries_from"]

DATABASES = ("offset", "cursor", "stall", "flaky")
_CLAUSE = re.compile(r"^\s*(nelements|nsites)\s*(<=|>=|=|<|>)\s*(\d+)\s*$")
_OPS = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def entries_from(structures: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """OPTIMADE structure entries of ``(id, Structure)`` pairs, plus the two unusable ones."""
    out = []
    for material_id, s in structures:
        symbols = [site.specie.symbol for site in s]
        out.append(
            {
                "id": material_id,
                "type": "structures",
                "attributes": {
                    "lattice_vectors": s.lattice.matrix.tolist(),
                    "species_at_sites": symbols,
                    "cartesian_site_positions": s.cart_coords.tolist(),
                    "species": [
                        {"name": e, "chemical_symbols": [e], "concentration": [1.0]}
                        for e in sorted(set(symbols))
                    ],
                    "nsites": len(s),
                    "nelements": len(set(symbols)),
                    "chemical_formula_reduced": s.composition.reduced_formula,
                    "_fake_energy": -1.0,
                },
            }
        )
    partial = json.loads(json.dumps(out[0]))
    partial["id"] = "partial-1"
    partial["attributes"]["species"][0]["concentration"] = [0.5]
    mismatched = json.loads(json.dumps(out[1]))
    mismatched["id"] = "mismatched-1"
    mismatched["attributes"]["cartesian_site_positions"] = mismatched["attributes"][
        "cartesian_site_positions"
    ][:-1]
    return [*out, partial, mismatched]


@dataclass
class FakeOptimade:
    """The server; ``start()`` it, read ``url``, ``stop()`` it. ``requests`` logs every path."""

    entries: list[dict[str, Any]]
    stall_s: float = 5.0
    flaky_failures: int = 2
    requests: list[str] = field(default_factory=list)

    def start(self) -> FakeOptimade:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                status, body = fake.answer(self.path)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/vnd.api+json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up waiting (the stall test)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._flaky_left = self.flaky_failures
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ answers

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        if segments == ["providers", "v1", "links"]:
            return 200, self.providers()
        if (
            len(segments) == 3
            and segments[0].endswith("-index")
            and segments[1:] == ["v1", "links"]
        ):
            db = segments[0].removesuffix("-index")
            children = [db] if db in DATABASES else list(DATABASES) if db == "many" else []
            return 200, {"data": [self.link(d, "child") for d in children], "meta": self.meta()}
        if len(segments) == 3 and segments[0] in DATABASES and segments[1] == "v1":
            if segments[2] == "info":
                return 200, self.info()
            if segments[2] == "structures":
                return self.structures(segments[0], query)
        return 404, error(404, "Not Found", f"no endpoint {parts.path}")

    def meta(self, **extra: Any) -> dict[str, Any]:
        return {"api_version": "1.1.0", "provider": {"name": "Fake", "prefix": "fake"}, **extra}

    def link(self, name: str, link_type: str) -> dict[str, Any]:
        return {
            "id": name,
            "type": "links",
            "attributes": {
                "name": f"Fake {name} database",
                "base_url": f"{self.url}/{name}",
                "link_type": link_type,
            },
        }

    def providers(self) -> dict[str, Any]:
        data = []
        for name in (*DATABASES, "many"):
            data.append(
                {
                    "id": name,
                    "type": "links",
                    "attributes": {
                        "name": f"Fake provider {name}",
                        "base_url": f"{self.url}/{name}-index",
                        "link_type": "external",
                    },
                }
            )
        return {"data": data, "meta": self.meta()}

    def info(self) -> dict[str, Any]:
        return {
            "data": {
                "type": "info",
                "id": "/",
                "attributes": {
                    "api_version": "1.1.0",
                    "available_api_versions": [{"url": self.url, "version": "1.1.0"}],
                    "available_licenses": ["CC-BY-4.0"],
                },
            },
            "meta": self.meta(),
        }

    def structures(self, db: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        known = {"filter", "page_limit", "page_offset", "page_cursor"}
        unknown = sorted(set(query) - known)
        if unknown:
            return 400, error(400, "Bad Request", f"unknown query parameter(s) {unknown}")
        try:
            selected = self.select(query.get("filter"))
        except ValueError as exc:
            return 400, error(400, "Bad Request", f"filter: {exc}")
        limit = int(query.get("page_limit", 10))
        if db == "cursor":
            offset = decode_cursor(query["page_cursor"]) if "page_cursor" in query else 0
            if offset is None:
                return 400, error(400, "Bad Request", "page_cursor is not a cursor of this server")
        else:
            offset = int(query.get("page_offset", 0))
        if offset > 0 and db == "stall":
            time.sleep(self.stall_s)
        if offset > 0 and db == "flaky" and self._flaky_left > 0:
            self._flaky_left -= 1
            return 503, error(503, "Service Unavailable", "try again")
        page = selected[offset : offset + limit]
        more = offset + limit < len(selected)
        nxt = None
        if more:
            params: dict[str, Any] = {"page_limit": limit}
            if "filter" in query:
                params["filter"] = query["filter"]
            if db == "cursor":
                params["page_cursor"] = encode_cursor(offset + limit)
            else:
                params["page_offset"] = offset + limit
            nxt = f"{self.url}/{db}/v1/structures?{urlencode(params)}"
        body = {
            "data": page,
            "links": {"next": nxt},
            "meta": self.meta(data_returned=len(selected), more_data_available=more),
        }
        return 200, body

    def select(self, text: str | None) -> list[dict[str, Any]]:
        if not text:
            return list(self.entries)
        clauses = []
        for clause in text.split(" AND "):
            found = _CLAUSE.match(clause)
            if not found:
                raise ValueError(f"cannot parse {clause.strip()!r}")
            clauses.append((found[1], _OPS[found[2]], int(found[3])))
        return [
            e
            for e in self.entries
            if all(op(e["attributes"][name], value) for name, op, value in clauses)
        ]


def error(status: int, title: str, detail: str) -> dict[str, Any]:
    return {
        "errors": [{"status": str(status), "title": title, "detail": detail}],
        "meta": {"api_version": "1.1.0"},
    }


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"after:{offset}".encode()).decode()


def decode_cursor(token: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return int(text.removeprefix("after:")) if text.startswith("after:") else None
