"""A local stand-in for the part of the Materials Project API that ``mp-api`` talks to.

A real HTTP server (stdlib ``ThreadingHTTPServer``) on 127.0.0.1 with an ephemeral port. It
answers ``GET /heartbeat`` and ``GET /materials/summary/`` the way the real service does for
the requests ``crystalgrid fetch`` makes: ``_skip`` / ``_limit`` pagination, ``_fields``
projection, ``_sort_fields=material_id``, ``meta.total_doc``, the ``x-api-key`` header, and the
filters crystalgrid sends (``nsites_min/max``, ``energy_above_hull_min/max``, ``elements``,
``material_ids``, ``batch_id_not_eq``). Any other query parameter is refused with HTTP 400, so
a test also checks that crystalgrid sends only what it documents.

The documents are real Materials Project structures (``../shared/data/mp_binaries``); the
properties the file lacks (energy above hull, formation energy, band gap, space group) are
computed deterministically from the material id: plausible values, not physical ones.

Faults can be injected while it runs (see :class:`Faults`): a status for the next N summary
requests (429 then success), a status forever for one ``_skip`` (a page that keeps failing),
a refused key, and a delay per summary request (to kill a client mid-fetch reliably).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["DB_VERSION", "GNOME_BATCH_ID", "FakeMaterialsProject", "Faults", "load_documents"]

DB_VERSION = "2025.09.25"
GNOME_BATCH_ID = "gnome_r2scan_statics"
MAX_LIMIT = 1000
KNOWN_PARAMS = {
    "nsites_min",
    "nsites_max",
    "energy_above_hull_min",
    "energy_above_hull_max",
    "elements",
    "material_ids",
    "batch_id_not_eq",
    "_fields",
    "_skip",
    "_limit",
    "_sort_fields",
    "_all_fields",
}


def _unit(material_id: str, salt: str) -> float:
    """A deterministic number in [0, 1) from an id (so the fake properties never change)."""
    digest = hashlib.sha256(f"{salt}:{material_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@cache
def _spacegroup_symbols() -> dict[int, str]:
    from pymatgen.symmetry.groups import SYMM_DATA

    symbols: dict[int, str] = {}
    for symbol, entry in SYMM_DATA["space_group_encoding"].items():
        symbols.setdefault(entry["int_number"], symbol)
    return symbols


def _spacegroup(number: int) -> tuple[str, str]:
    bounds = [(2, "Triclinic"), (15, "Monoclinic"), (74, "Orthorhombic"), (142, "Tetragonal")]
    bounds += [(167, "Trigonal"), (194, "Hexagonal"), (230, "Cubic")]
    system = next(name for top, name in bounds if number <= top)
    return _spacegroup_symbols()[number], system


def load_documents(path: Path, *, gnome_every: int = 40) -> list[dict[str, Any]]:
    """Summary documents built from ``mp_binaries.json.gz``, in the file's order.

    Args:
        path: the ``mp_binaries.json.gz`` file.
        gnome_every: every n-th document is tagged as a GNoME entry (``batch_id``), so that
            ``include_gnome`` has something to exclude.

    Returns:
        Documents with ``material_id``, ``formula_pretty``, ``structure`` (the file's dict,
        untouched), ``nsites``, ``elements``, ``energy_above_hull`` (eV/atom),
        ``formation_energy_per_atom`` (eV/atom), ``band_gap`` (eV), ``is_stable``,
        ``theoretical``, ``symmetry`` and ``batch_id``.
    """
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = json.load(fh)
    docs = []
    for i, row in enumerate(rows):
        mid = row["material_id"]
        structure = row["structure"]
        elements = sorted({sp["element"] for site in structure["sites"] for sp in site["species"]})
        ehull = 0.0 if _unit(mid, "stable") < 0.35 else round(0.4 * _unit(mid, "ehull"), 4)
        gap = 0.0 if _unit(mid, "metal") < 0.4 else round(6.0 * _unit(mid, "gap"), 4)
        number = 1 + int(230 * _unit(mid, "sg"))
        symbol, system = _spacegroup(number)
        docs.append(
            {
                "material_id": mid,
                "formula_pretty": row["formula"],
                "structure": structure,
                "nsites": len(structure["sites"]),
                "elements": elements,
                "energy_above_hull": ehull,
                "formation_energy_per_atom": round(-3.5 * _unit(mid, "eform") + 0.3, 4),
                "band_gap": gap,
                "is_stable": ehull == 0.0,
                "theoretical": _unit(mid, "theo") < 0.3,
                "symmetry": {"number": number, "symbol": symbol, "crystal_system": system},
                "batch_id": GNOME_BATCH_ID if i % gnome_every == gnome_every - 1 else "mp",
            }
        )
    return docs


def select(docs: list[dict[str, Any]], params: dict[str, str]) -> list[dict[str, Any]]:
    """The documents a summary query matches, in the order the server returns them."""
    out = docs
    for name, value in params.items():
        if name in ("nsites_min", "energy_above_hull_min"):
            key, low = name.removesuffix("_min"), float(value)
            out = [d for d in out if d[key] >= low]
        elif name in ("nsites_max", "energy_above_hull_max"):
            key, high = name.removesuffix("_max"), float(value)
            out = [d for d in out if d[key] <= high]
        elif name == "elements":
            wanted = set(value.split(","))
            out = [d for d in out if wanted <= set(d["elements"])]
        elif name == "material_ids":
            wanted = set(value.split(","))
            out = [d for d in out if d["material_id"] in wanted]
        elif name == "batch_id_not_eq":
            out = [d for d in out if d["batch_id"] != value]
    sort = params.get("_sort_fields")
    if sort:
        out = sorted(out, key=lambda d: d[sort.lstrip("-")], reverse=sort.startswith("-"))
    return out


@dataclass
class Faults:
    """What the server does wrong; change the attributes while it runs.

    Attributes:
        next_statuses: statuses answered to the next summary requests, one per request
            (e.g. ``[429]``: rate-limit once, then serve normally; ``0`` serves normally).
        skip_statuses: ``_skip`` value -> status answered every time (a page that keeps failing).
        reject_key: answer every summary request with :attr:`reject_status`.
        reject_status: 401 or 403.
        delay_s: seconds to sleep before answering each summary request.
        delay_from: summary requests answered at once before ``delay_s`` applies (a server
            that stalls in the middle of a download).
        retry_after: the ``Retry-After`` header sent with 429 and 503 answers (seconds).
    """

    next_statuses: list[int] = field(default_factory=list)
    skip_statuses: dict[int, int] = field(default_factory=dict)
    reject_key: bool = False
    reject_status: int = 401
    delay_s: float = 0.0
    delay_from: int = 0
    retry_after: str = "0"


class FakeMaterialsProject:
    """The server: ``start()`` / ``stop()``, ``url`` for ``MP_API_ENDPOINT``, a request log.

    Args:
        docs: the documents it serves (see :func:`load_documents`).
        api_key: the only key it accepts (32 characters).
        db_version: what the heartbeat reports as the database version.
    """

    def __init__(
        self, docs: list[dict[str, Any]], *, api_key: str, db_version: str = DB_VERSION
    ) -> None:
        self.docs = docs
        self.api_key = api_key
        self.db_version = db_version
        self.faults = Faults()
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._summary_count = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint, e.g. ``http://127.0.0.1:40123/`` (with the trailing slash mp-api wants)."""
        assert self._httpd is not None, "start() the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def summary_requests(self) -> list[dict[str, Any]]:
        """The logged ``/materials/summary/`` requests: ``{"params", "status", "headers"}``."""
        with self._lock:
            return [e for e in self.log if e["path"] == "/materials/summary/"]

    def start(self) -> FakeMaterialsProject:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Silence the default stderr log; requests go to ``server.log``."""

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                status, body, headers = server._answer(parts.path, params, self.headers)
                with server._lock:
                    server.log.append(
                        {
                            "path": parts.path,
                            "params": params,
                            "status": status,
                            "headers": dict(self.headers),
                        }
                    )
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client went away (a killed fetch)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _answer(
        self, path: str, params: dict[str, str], headers: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path == "/heartbeat":
            body = {
                "version": "0.87.0",
                "db_version": self.db_version,
                "access_controlled_batch_ids": [GNOME_BATCH_ID],
            }
            return 200, body, {}
        if path != "/materials/summary/":
            return 404, {"detail": "Not Found"}, {}
        faults = self.faults
        with self._lock:
            self._summary_count += 1
            seen = self._summary_count
        if faults.delay_s and seen > faults.delay_from:
            time.sleep(faults.delay_s)
        if headers.get("x-api-key") != self.api_key or faults.reject_key:
            status = faults.reject_status if faults.reject_key else 401
            return status, {"detail": "Invalid authentication credentials"}, {}
        unknown = sorted(set(params) - KNOWN_PARAMS)
        if unknown:
            return 400, {"detail": f"unknown query parameters: {unknown}"}, {}
        with self._lock:
            injected = faults.next_statuses.pop(0) if faults.next_statuses else None
        skip = int(params.get("_skip", 0))
        injected = injected or faults.skip_statuses.get(skip)
        if injected:
            extra = {"Retry-After": faults.retry_after} if injected in (429, 503) else {}
            return injected, {"detail": f"injected HTTP {injected}"}, extra
        limit = int(params.get("_limit", 100))
        if limit > MAX_LIMIT:
            return 400, {"detail": f"_limit above {MAX_LIMIT}"}, {}
        matched = select(self.docs, params)
        fields = params["_fields"].split(",") if params.get("_fields") else ["material_id"]
        page = [{f: d[f] for f in fields if f in d} for d in matched[skip : skip + limit]]
        meta = {"total_doc": len(matched), "max_limit": MAX_LIMIT, "db_version": self.db_version}
        return 200, {"data": page, "meta": meta}, {}
