"""The demo collection: real crystal structures that ship inside every pymatgen install.

Two sets, read from the installed ``pymatgen`` package (no network, no download):

- pymatgen's test structures, ``pymatgen/util/structures/*.json`` (21 ``Structure`` dicts,
  some saved as ``Interface`` or ``TransformedStructure``): ids ``"pymatgen:<file stem>"``
  (e.g. ``"pymatgen:LiFePO4"``), in file-name order, property ``{"name": <stem>}``.
- the AFLOW Library of Crystallographic Prototypes as pymatgen stores it,
  ``pymatgen/analysis/prototypes/aflow_prototypes.json.gz`` (288 entries
  ``{"snl": StructureNL dict, "tags": {"aflow", "pearson", "strukturbericht", "mineral"}}``),
  in file order, with the tags as properties. These are the 288 prototypes of Part 1 of the
  library (Mehl et al. 2017; every entry cites it); Part 2 (Hicks et al. 2019) is not in the
  file, so it is not cited. The id is ``"aflow:<aflow label>"``, e.g.
  ``"aflow:AB_hP6_154_a_b"``. Nine labels are shared by two to three prototypes (the same
  Wyckoff sites with different parameters, e.g. ``A_oC8_64_f`` is alpha-Ga (A11), black P
  (A17) and A14); those get a suffix: ``"-<strukturbericht>"`` when it has one (``"aflow:
  A_oC8_64_f-A11"``), else ``"-<mineral name>"`` with spaces as underscores, else
  ``"-<n>"`` (the 1-based position among the label's entries in file order). A further
  clash (none in the data) gets ``"-2"``, ``"-3"``...

All payloads are plain ``Structure.as_dict()``-style dicts (``kind="dict"``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystalgrid.errors import CrystalgridError
from crystalgrid.sources.base import RawRecord

if TYPE_CHECKING:
    from collections.abc import Iterator
    from importlib.resources.abc import Traversable

__all__ = ["DemoSource"]

_LICENCE = "MIT (pymatgen, which distributes both sets)"
_CITATION = (
    "pymatgen: S. P. Ong et al., Comput. Mater. Sci. 68, 314-319 (2013), "
    "doi:10.1016/j.commatsci.2012.10.028; AFLOW Library of Crystallographic Prototypes, "
    "Part 1: M. J. Mehl et al., Comput. Mater. Sci. 136, S1-S828 (2017), "
    "doi:10.1016/j.commatsci.2017.01.017"
)
_NO_TAG = ("", "None")


def _structures_dir() -> Traversable:
    return resources.files("pymatgen.util") / "structures"


def _prototypes_file() -> Traversable:
    return resources.files("pymatgen.analysis") / "prototypes" / "aflow_prototypes.json.gz"


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """The ``Structure`` part of a Structure / Interface / TransformedStructure / SNL dict."""
    return {
        "@module": "pymatgen.core.structure",
        "@class": "Structure",
        "charge": data.get("charge") or 0,
        "lattice": data["lattice"],
        "properties": data.get("properties") or {},
        "sites": data["sites"],
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text.strip()).strip("_")


def _aflow_ids(tags: list[dict[str, str]]) -> list[str]:
    """Unique, stable ids for the prototypes (see the module docstring)."""
    labels = [str(t.get("aflow", "")) for t in tags]
    counts = Counter(labels)
    position: Counter[str] = Counter()
    ids: list[str] = []
    taken: set[str] = set()
    for label, tag in zip(labels, tags, strict=True):
        position[label] += 1
        candidate = f"aflow:{label}"
        if counts[label] > 1:
            strukturbericht = str(tag.get("strukturbericht", "")).strip()
            mineral = _slug(str(tag.get("mineral", "")))
            if strukturbericht not in _NO_TAG:
                suffix = _slug(strukturbericht)
            elif mineral:
                suffix = mineral
            else:
                suffix = str(position[label])
            candidate = f"{candidate}-{suffix}"
        unique, n = candidate, 1
        while unique in taken:
            n += 1
            unique = f"{candidate}-{n}"
        taken.add(unique)
        ids.append(unique)
    return ids


class DemoSource:
    """The embedded demo collection (309 real structures; see the module docstring).

    Works offline on a fresh install: it only reads files inside the installed pymatgen.
    """

    name = "demo"

    def _structure_files(self) -> list[Traversable]:
        files = [f for f in _structures_dir().iterdir() if f.name.endswith(".json")]
        if not files:
            raise CrystalgridError("the installed pymatgen has no util/structures/*.json files")
        return sorted(files, key=lambda f: f.name)

    def records(self) -> Iterator[RawRecord]:
        """pymatgen's test structures (by file name), then the AFLOW prototypes (file order)."""
        for file in self._structure_files():
            stem = file.name[: -len(".json")]
            data = json.loads(file.read_text(encoding="utf-8"))
            yield RawRecord(
                f"pymatgen:{stem}",
                "dict",
                _plain(data),
                origin=f"pymatgen/util/structures/{file.name}",
                properties={"name": stem},
            )
        entries = json.loads(gzip.decompress(_prototypes_file().read_bytes()).decode("utf-8"))
        tags = [entry.get("tags") or {} for entry in entries]
        for index, (material_id, entry, tag) in enumerate(
            zip(_aflow_ids(tags), entries, tags, strict=True)
        ):
            yield RawRecord(
                material_id,
                "dict",
                _plain(entry["snl"]),
                origin=f"pymatgen/analysis/prototypes/aflow_prototypes.json.gz[{index}]",
                properties={key: str(value) for key, value in sorted(tag.items())},
            )

    def provenance(self) -> dict[str, Any]:
        """Where the demo structures come from, their licence and what to cite."""
        try:
            pymatgen_version: str | None = version("pymatgen")
        except PackageNotFoundError:
            pymatgen_version = None
        return {
            "kind": "demo",
            "location": str(Path(str(resources.files("pymatgen.util"))).parent),
            "files": len(self._structure_files()) + 1,
            "description": (
                "pymatgen's test structures (pymatgen/util/structures/*.json) and the AFLOW "
                "Library of Crystallographic Prototypes as distributed with pymatgen "
                "(pymatgen/analysis/prototypes/aflow_prototypes.json.gz)"
            ),
            "pymatgen_version": pymatgen_version,
            "licence": _LICENCE,
            "citation": _CITATION,
        }

    def fingerprint(self) -> str:
        """SHA-256 over the names and bytes of the demo files (changes with pymatgen's data)."""
        digest = hashlib.sha256()
        for file in [*self._structure_files(), _prototypes_file()]:
            data = file.read_bytes()
            digest.update(file.name.encode() + b"\0" + str(len(data)).encode() + b"\0")
            digest.update(data)
        return digest.hexdigest()

    def __repr__(self) -> str:
        return "DemoSource()"
