"""VASP structure files: one POSCAR / CONTCAR (or ``*.vasp``, ``*.poscar``) file, or a folder of
them, read with pymatgen (no extra package).

In a folder, the files right under it (names starting with ``POSCAR`` or ``CONTCAR``, or ending
in ``.vasp`` / ``.poscar``, case-insensitive) are read in name order, and then one file per
folder one level down (a calculation per folder): its ``CONTCAR`` (the relaxed structure) where
there is one, else its ``POSCAR``. A record's id is
the file's name without ``.vasp`` / ``.poscar``, or the folder's name for a file named exactly
``POSCAR`` / ``CONTCAR``. Text that is not a POSCAR is a reject (``"unparsable"``) when parsed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crystalgrid.errors import BadInputError
from crystalgrid.sources.base import RawRecord, Rejected
from crystalgrid.sources.location import FileSource, Location, RemotePath, hash_files

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["PoscarSource"]

_PREFIXES = ("poscar", "contcar")
_SUFFIXES = (".vasp", ".poscar")


def _is_poscar(path: Location) -> bool:
    name = path.name.lower()
    return name.startswith(_PREFIXES) or name.endswith(_SUFFIXES)


def _poscar_id(path: Location) -> str:
    """The record id of a POSCAR file (see the module docstring)."""
    name = path.name
    if name.upper() in ("POSCAR", "CONTCAR"):
        if isinstance(path, RemotePath):
            parent = path.fspath.rstrip("/").rsplit("/", 2)
            return parent[-2] if len(parent) > 1 else name
        return path.parent.name or name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class PoscarSource(FileSource):
    """POSCAR / CONTCAR files (one file or a folder of them), in name order."""

    kind = "poscar"
    describes = "a POSCAR / CONTCAR / .vasp file or a folder of them"

    @classmethod
    def can_open(cls, path: Location) -> bool:
        if path.is_dir():
            return bool(_listing(path))
        return _is_poscar(path)

    def _check(self) -> None:
        if self.path.is_dir() and not self._files():
            raise BadInputError(f"no POSCAR, CONTCAR or .vasp files in {self.path}")

    def _files(self) -> list[Path | RemotePath]:
        return _listing(self.path) if self.path.is_dir() else [self.path]

    def fingerprint(self) -> str:
        """SHA-256 over the files' names and bytes, in the order they are read."""
        return hash_files(self._files(), names=True)

    def records(self) -> Iterator[RawRecord | Rejected]:
        """One ``"poscar"`` record per file; unreadable or empty files are rejects."""
        seen: dict[str, str] = {}
        for path in self._files():
            material_id = _poscar_id(path)
            origin = str(path)
            try:
                text = path.read_bytes().decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                yield Rejected(material_id, "unreadable", f"{path.name}: not UTF-8 ({exc.reason})")
                continue
            except OSError as exc:
                yield Rejected(material_id, "unreadable", f"{path.name}: {exc.strerror or exc}")
                continue
            if material_id in seen:
                yield Rejected(
                    material_id, "duplicate_id", f"{origin} repeats the id of {seen[material_id]}"
                )
                continue
            seen[material_id] = origin
            if not text.strip():
                yield Rejected(material_id, "no_structure", f"{path.name} is empty")
                continue
            yield RawRecord(material_id, "poscar", text, origin=origin)


def _listing(folder: Location) -> list[Path | RemotePath]:
    """The POSCAR files of a folder: its own in name order, then one per sub-folder."""
    own: list[Path | RemotePath] = []
    nested: list[Path | RemotePath] = []
    entries: list[Path | RemotePath] = sorted(folder.iterdir(), key=lambda p: p.name)
    for entry in entries:
        if entry.is_file() and _is_poscar(entry):
            own.append(entry)
        elif entry.is_dir():
            for name in ("CONTCAR", "POSCAR"):  # the relaxed structure first
                candidate = entry / name
                if candidate.is_file():
                    nested.append(candidate)
                    break
    return own + nested
