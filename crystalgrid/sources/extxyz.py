"""Extended XYZ (ASE's format of atomistic machine-learning sets): one ``.xyz`` / ``.extxyz``
file (gzipped too) or a folder of them, many frames a file.

The listing only cuts the text into frames (an atom count, a comment line, that many atom
lines) and reads the comment line's ``key=value`` pairs; each frame is parsed later, in
parallel, by ASE (:func:`~crystalgrid.sources.base.parse_record`). A frame's id is its
``material_id``, ``id`` or ``unique_id`` value if it has one (checked in that order), else
``"<file stem>:<frame index>"`` (0-based). Its other scalar ``key=value`` pairs (``energy``,
``config_type``, ...) become properties; per-atom arrays (forces) are not kept.

Rejects: ``"no_cell"`` for a frame without a periodic ``Lattice`` (a molecule) or with a zero
one, ``"unreadable"`` for text that is not a frame (the rest of that file is skipped, since
frames cannot be found again after a broken count), ``"duplicate_id"``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from crystalgrid.errors import BadInputError
from crystalgrid.sources.base import RawRecord, Rejected
from crystalgrid.sources.location import (
    FileSource,
    Location,
    RemotePath,
    file_stem,
    hash_files,
    is_scalar,
    needs,
    open_text,
    plain_scalar,
    suffix_of,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["ID_KEYS", "ExtxyzSource"]

#: Comment-line keys that give a frame its id, in the order they are looked for.
ID_KEYS = ("material_id", "id", "unique_id")
#: Comment-line keys that describe the frame's layout, not a property of the structure.
_LAYOUT_KEYS = {"lattice", "properties", "pbc", "origin"}
_SUFFIXES = (".xyz", ".extxyz")


def _is_xyz(path: Location) -> bool:
    return suffix_of(path).endswith(_SUFFIXES)


class ExtxyzSource(FileSource):
    """Frames of extended-XYZ files (one file, or every ``*.xyz`` / ``*.extxyz[.gz]`` file of
    a folder, by name), in file order; see the module docstring for ids and properties."""

    kind = "extxyz"
    describes = "an extended XYZ file (.xyz, .extxyz, gzipped too) or a folder of them"

    @classmethod
    def can_open(cls, path: Location) -> bool:
        if path.is_dir():
            return any(_is_xyz(p) and p.is_file() for p in path.iterdir())
        return _is_xyz(path)

    requires = ("ase.io.extxyz", "ase", "extended XYZ")

    def _check(self) -> None:
        if self.path.is_dir() and not self._files():
            raise BadInputError(f"no .xyz or .extxyz files in {self.path}")

    def _files(self) -> list[Path | RemotePath]:
        if not self.path.is_dir():
            return [self.path]
        return sorted(
            (p for p in self.path.iterdir() if _is_xyz(p) and p.is_file()), key=lambda p: p.name
        )

    def fingerprint(self) -> str:
        """SHA-256 over the files' names and bytes, in name order."""
        return hash_files(self._files(), names=True)

    def records(self) -> Iterator[RawRecord | Rejected]:
        """One ``"extxyz"`` record per frame, file by file; see the module docstring."""
        seen: dict[str, str] = {}
        for path in self._files():
            for item in self._frames(path):
                if isinstance(item, RawRecord):
                    if item.material_id in seen:
                        item = Rejected(
                            item.material_id,
                            "duplicate_id",
                            f"{item.origin} repeats the id of {seen[item.material_id]}",
                        )
                    else:
                        seen[item.material_id] = item.origin
                yield item

    def _frames(self, path: Location) -> Iterator[RawRecord | Rejected]:
        stem = file_stem(path)
        with open_text(path) as fh:
            lines = iter(fh)
            number = 0  # lines read so far
            for index in itertools.count():
                head = next(lines, None)
                number += 1
                while head is not None and not head.strip():
                    head, number = next(lines, None), number + 1  # blank lines between frames
                if head is None:
                    return
                origin = f"{path.name}:frame {index}"
                try:
                    count = int(head.split()[0])
                    if count < 0:
                        raise ValueError(count)
                except ValueError:
                    yield Rejected(
                        origin,
                        "unreadable",
                        f"{path.name}:line {number} is not an atom count; the rest of the "
                        "file is skipped",
                    )
                    return
                body = [next(lines, None) for _ in range(count + 1)]
                number += count + 1
                if any(line is None for line in body):
                    yield Rejected(origin, "unreadable", f"{origin} ends before its {count} atoms")
                    return
                comment = str(body[0])
                info = self._info(comment)
                material_id = next(
                    (str(info[k]).strip() for k in ID_KEYS if str(info.get(k, "")).strip()),
                    f"{stem}:{index}",
                )
                properties = {
                    key: plain_scalar(value)
                    for key, value in info.items()
                    if key.lower() not in _LAYOUT_KEYS and key not in ID_KEYS and is_scalar(value)
                }
                text = head + "".join(str(line) for line in body)
                yield RawRecord(material_id, "extxyz", text, origin=origin, properties=properties)

    def _info(self, comment: str) -> dict[str, Any]:
        """The comment line's ``key=value`` pairs (``{}`` when it has none readable)."""
        try:
            return dict(needs(*self.requires).key_val_str_to_dict(comment.strip()))
        except (ValueError, KeyError, IndexError, SyntaxError):
            return {}
