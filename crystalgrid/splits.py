"""Which crystals go to train, val and test, and split files that carry that choice to other stores.

Methods (``BuildConfig.split_by``):

- ``"random"``: a seeded ranking of the material ids, cut at the fractions (the counts follow
  them exactly; the source's order does not matter, and adding or removing crystals moves
  only crystals near the cuts).
- ``"composition"`` / ``"chemsys"``: grouped; every crystal of one reduced formula (one set of
  elements) lands in one split, so polymorphs never straddle train and test. Groups are taken
  in a seeded order and each goes to the split furthest below its target, so the fractions
  are as close as the group sizes allow.
- ``"source"``: the source's own split of every record (a CDVAE folder of train.csv, val.csv,
  test.csv).
- ``"auto"``: ``"source"`` when the source gives splits, else ``"random"``.
- a split file (``build(..., splits=...)``): the split of each id as listed; crystals the file
  does not list are left out (recorded as rejects with reason ``not_in_splits``).

A split file is JSON: ``{"format": "crystalgrid-splits/1", "train": [ids], "val": [ids],
"test": [ids], ...}`` (other keys describe where it came from). ``crystalgrid splits STORE
--out ids.json`` writes one from a built store.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from crystalgrid.errors import BadInputError, ConfigError, CrystalgridError, NotFoundError

__all__ = [
    "FILE_FORMAT",
    "METHODS",
    "SPLITS",
    "assign",
    "group_key",
    "grouped_split",
    "random_split",
    "read_split_file",
    "resolve",
    "split_document",
    "split_file_digest",
    "write_split_file",
]

#: The splits, in the order of their codes (0 train, 1 val, 2 test) and in the store.
SPLITS = ("train", "val", "test")
METHODS = ("auto", "random", "composition", "chemsys", "source")
FILE_FORMAT = "crystalgrid-splits/1"


def _rank(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).digest()


def random_split(material_ids: Sequence[str], seed: int, fractions: Sequence[float]) -> np.ndarray:
    """Split code (0 train, 1 val, 2 test) per crystal from a seeded ranking of the ids."""
    keys = [_rank(seed, m) for m in material_ids]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    n = len(order)
    n_train = round(fractions[0] * n)
    n_val = min(n - n_train, round(fractions[1] * n))
    split = np.full(n, 2, dtype=np.uint8)
    split[order[:n_train]] = 0
    split[order[n_train : n_train + n_val]] = 1
    return split


def group_key(numbers: np.ndarray, by: str) -> str:
    """The group of a crystal from its atomic numbers: its reduced formula as
    ``"Z:count ..."`` (``by="composition"``) or its elements (``by="chemsys"``)."""
    counts = Counter(int(z) for z in numbers)
    if by == "chemsys":
        return "-".join(str(z) for z in sorted(counts))
    divisor = math.gcd(*counts.values())
    return " ".join(f"{z}:{counts[z] // divisor}" for z in sorted(counts))


def grouped_split(keys: Sequence[str], seed: int, fractions: Sequence[float]) -> np.ndarray:
    """Split code per crystal such that crystals with equal ``keys`` share a split."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        members[key].append(i)
    targets = np.asarray(fractions, dtype=np.float64) * len(keys)
    counts = np.zeros(3)
    split = np.zeros(len(keys), dtype=np.uint8)
    for key in sorted(members, key=lambda k: _rank(seed, k)):
        code = int(np.argmax(targets - counts))  # the split furthest below its target
        split[members[key]] = code
        counts[code] += len(members[key])
    return split


def assign(
    material_ids: Sequence[str],
    numbers: Sequence[np.ndarray],
    given: Sequence[str | None],
    *,
    method: str,
    seed: int,
    fractions: Sequence[float],
    table: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The split code (0 train, 1 val, 2 test) of every crystal, and which are kept.

    Args:
        material_ids: ids of the crystals, (C,).
        numbers: atomic numbers of each crystal's sites.
        given: the source's split of each crystal (``None`` where it gives none).
        method: one of :data:`METHODS` (ignored when ``table`` is given).
        seed, fractions: as in ``BuildConfig``.
        table: a split file's ``{id: split name}``.

    Returns:
        (C,) uint8 split codes and (C,) bool: False for crystals ``table`` does not list.

    Raises:
        ConfigError: an unknown method, or ``"source"`` asked of a source that does not give
            every crystal's split.
    """
    n = len(material_ids)
    keep = np.ones(n, dtype=bool)
    if table is not None:
        codes = np.zeros(n, dtype=np.uint8)
        for i, material_id in enumerate(material_ids):
            name = table.get(material_id)
            if name is None:
                keep[i] = False
            else:
                codes[i] = SPLITS.index(name)
        return codes, keep
    method = resolve(method, given)
    if method == "source":
        missing = sum(g is None for g in given)
        if missing:
            raise ConfigError(
                f"split method 'source' needs a split for every structure; {missing} have none "
                "(a folder of train.csv, val.csv and test.csv gives them)"
            )
        return np.array([SPLITS.index(g) for g in given], dtype=np.uint8), keep
    if method == "random":
        return random_split(material_ids, seed, fractions), keep
    if method in ("composition", "chemsys"):
        keys = [group_key(z, method) for z in numbers]
        return grouped_split(keys, seed, fractions), keep
    raise ConfigError(f"split method must be one of {', '.join(METHODS)}, got {method!r}")


def resolve(method: str, given: Sequence[str | None]) -> str:
    """The method ``"auto"`` stands for with these source splits."""
    if method != "auto":
        return method
    return "source" if any(g is not None for g in given) else "random"


def split_document(ids: Mapping[str, Sequence[str]], about: Mapping[str, Any]) -> dict[str, Any]:
    """A split file's content: ``{split: [ids]}`` and ``about`` (where it came from)."""
    return {"format": FILE_FORMAT, **about, **{name: list(ids[name]) for name in SPLITS}}


def write_split_file(
    path: str | os.PathLike[str], ids: Mapping[str, Sequence[str]], about: Mapping[str, Any]
) -> None:
    """Write :func:`split_document` to ``path``."""
    document = split_document(ids, about)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=1)
            fh.write("\n")
    except OSError as exc:
        raise CrystalgridError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_split_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{material id: split name}`` from a split file.

    Raises:
        NotFoundError: no file there.
        BadInputError: not readable, not a split file, or an id listed twice.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            document = json.load(fh)
    except FileNotFoundError:
        raise NotFoundError(f"split file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable split file ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
        raise BadInputError(
            f'{path}: not a split file (expected "format": "{FILE_FORMAT}"; '
            "write one with crystalgrid.splits.write_split_file)"
        )
    table: dict[str, str] = {}
    for name in SPLITS:
        ids = document.get(name, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BadInputError(f"{path}: {name!r} must be a list of material ids")
        for material_id in ids:
            if material_id in table:
                raise BadInputError(
                    f"{path}: {material_id} is listed in {table[material_id]} and {name}"
                )
            table[material_id] = name
    if not table:
        raise BadInputError(f"{path}: the split file lists no ids")
    return table


def split_file_digest(table: Mapping[str, str]) -> str:
    """SHA-256 of a split table, independent of the file's layout and order."""
    payload = "\n".join(f"{k}\t{table[k]}" for k in sorted(table))
    return hashlib.sha256(payload.encode()).hexdigest()
