"""The API key (from the caller, the environment or pymatgen's settings) and id lists."""

from __future__ import annotations

import os
import re
from pathlib import Path

from crystalgrid.errors import BadInputError, ConfigError, CrystalgridError, NotFoundError

__all__ = ["ID_PATTERN", "KEY_URL", "read_ids", "resolve_api_key", "scrub"]

KEY_URL = "https://next-gen.materialsproject.org/api"
#: A material id: ``mp-149``, ``mvc-11``, ...
ID_PATTERN = re.compile(r"[A-Za-z]+-[0-9A-Za-z]+")
_KEY_PATTERN = re.compile(r"[!-~]{32}")  # 32 printable ASCII characters, no spaces


def _pmgrc_key() -> str | None:
    """``PMG_MAPI_KEY`` from pymatgen's settings file (``~/.config/.pmgrc.yaml``), if any."""
    try:
        from pymatgen.core import SETTINGS
    except ImportError:  # pragma: no cover - pymatgen is a dependency
        return None
    value = SETTINGS.get("PMG_MAPI_KEY")
    return str(value) if value else None


def resolve_api_key(api_key: str | None = None) -> str:
    """The Materials Project API key to use, checked for shape (never for validity).

    Args:
        api_key: an explicit key; otherwise ``MP_API_KEY``, then ``PMG_MAPI_KEY`` (environment,
            then pymatgen's settings file).

    Returns:
        The key, stripped of surrounding white space.

    Raises:
        ConfigError: no key anywhere, or a key that is not 32 printable characters (the
            message gives the length, never the key).
    """
    key = api_key or os.environ.get("MP_API_KEY") or os.environ.get("PMG_MAPI_KEY")
    key = (key or _pmgrc_key() or "").strip()
    if not key:
        raise ConfigError(
            "no Materials Project API key: set MP_API_KEY (or pass --api-key); "
            f"get a key at {KEY_URL}"
        )
    if not _KEY_PATTERN.fullmatch(key):
        raise ConfigError(
            "the Materials Project API key is malformed: expected 32 characters without "
            f"spaces, got {len(key)}; copy it again from {KEY_URL}"
        )
    return key


def scrub(text: str, key: str) -> str:
    """``text`` with every occurrence of the API ``key`` replaced by ``<api key>``."""
    return text.replace(key, "<api key>") if key else text


def read_ids(path: str | os.PathLike[str]) -> list[str]:
    """Material ids from a file: one per line, or the first column of a CSV.

    Blank lines, ``#`` comments and a header line (a first field that is not an id, e.g.
    ``material_id``) are skipped; repeats are dropped, keeping the first.

    Raises:
        NotFoundError: the file does not exist.
        BadInputError: the file is not UTF-8 text, a line holds no valid id (named by line
            number), or it holds no id at all.
        CrystalgridError: the file cannot be read (the system's error).
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError as exc:
        raise NotFoundError(f"cannot read the id list {file}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise BadInputError(f"cannot read the id list {file}: {exc}") from exc
    except OSError as exc:
        raise CrystalgridError(f"cannot read the id list {file}: {exc}") from exc
    ids: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        first = re.split(r"[,\s;]+", text, maxsplit=1)[0].strip().strip("\"'")
        if ID_PATTERN.fullmatch(first):
            ids.append(first)
        elif not ids:
            continue  # a header line
        else:
            raise BadInputError(f"{file}:{number}: {first!r} is not a material id")
    if not ids:
        raise BadInputError(f"{file} holds no material ids (e.g. mp-149, one per line)")
    return list(dict.fromkeys(ids))
