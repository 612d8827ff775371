"""The layout of a ``crystalgrid-store/1`` group: every array, its dimensions and codecs.

:data:`SCHEMA` lists every array (path, shape, dtype, chunking, when it is checksummed); the
writer creates the arrays from it, :func:`~crystalgrid.store.verify` checks the ones it marks,
and docs/store-format.md shows it as a table (:func:`schema_table`; a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from zarr.codecs import BloscCodec

from crystalgrid.errors import ConfigError
from crystalgrid.splits import SPLITS

__all__ = [
    "ATTR",
    "BLOCK_ARRAYS",
    "CODECS",
    "FORMAT",
    "LEGACY_CHECKSUM",
    "LEGACY_DENSITY_METHOD",
    "SCHEMA",
    "SPLITS",
    "UNEXPECTED_ERROR",
    "ArraySchema",
    "array_schema",
    "compressor",
    "dimension_names",
    "schema_table",
]

FORMAT = "crystalgrid-store/1"
#: The reject reason (``rejects/reason``) of a record whose parsing or filtering raised an
#: unexpected exception: a bug of crystalgrid or of a library it uses, not a fault of the input.
UNEXPECTED_ERROR = "error"
#: The group attribute that holds the store's metadata (:class:`~crystalgrid.store.StoreMeta`).
ATTR = "crystalgrid"
#: The density evaluation of stores without a ``density_method`` attribute (built before it
#: was recorded): matrix products of the atoms' full per-axis factors.
LEGACY_DENSITY_METHOD = "separable/1"
#: The chunk digest of stores without a ``checksum`` attribute (built before it was recorded).
LEGACY_CHECKSUM = "blake2b-64"


@dataclass(frozen=True)
class ArraySchema:
    """One array of the store.

    Attributes:
        path: its path in the group (``<name>`` stands for any name).
        shape: the shape in words: ``n`` samples, ``B`` bins, ``m`` atoms, ``c`` crystals,
            ``s`` sites, ``r`` rejects.
        dtype: a numpy dtype name, ``"str"`` (variable-length strings), or ``"density"``
            (the build's ``dtype``: float32 or float16).
        chunk: samples (rows) per chunk: a number, ``"grid"`` (the build's
            ``chunk_samples``) or ``"block"`` (one build block's samples).
        checksum: ``"block"`` (each chunk digested by the block that writes it) or
            ``"final"`` (digested when the build finalises).
        notes: what it holds.
        dims: the names of its dimensions (Zarr's ``dimension_names``, what xarray reads).
    """

    path: str
    shape: str
    dtype: str
    chunk: int | str
    checksum: str
    notes: str
    dims: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        """Rows per chunk of an array chunked by a fixed count.

        Raises:
            TypeError: for arrays chunked by the build's ``"grid"`` or ``"block"``.
        """
        if isinstance(self.chunk, str):
            raise TypeError(f"{self.path} is chunked by the build's {self.chunk}")
        return self.chunk

    @property
    def tail(self) -> tuple[int, ...]:
        """The fixed trailing dimensions (``(4, 4)`` for ``(n, 4, 4)``; grids have none)."""
        dims = [d.strip() for d in self.shape.strip("()").split(",")[1:] if d.strip()]
        return tuple(int(d) for d in dims) if all(d.isdigit() for d in dims) else ()


#: Every array of a ``crystalgrid-store/1`` group, in the order of docs/store-format.md.
SCHEMA: tuple[ArraySchema, ...] = (
    ArraySchema(
        "density",
        "(n, B, B, B)",
        "density",
        "grid",
        "block",
        "electrons per Å^3; blosc lz4 + shuffle by default",
        dims=("sample", "x", "y", "z"),
    ),
    ArraySchema(
        "species",
        "(n, B, B, B)",
        "uint8",
        "grid",
        "block",
        "atomic number of the nearest ground-truth atom (inside the box) within the "
        "species radius, else 0; blosc zstd",
        dims=("sample", "x", "y", "z"),
    ),
    ArraySchema(
        "samples/crystal",
        "(n,)",
        "int32",
        "block",
        "block",
        "index into `crystals/`",
        dims=("sample",),
    ),
    ArraySchema(
        "samples/material_id", "(n,)", "str", "block", "block", "the crystal's id", dims=("sample",)
    ),
    ArraySchema(
        "samples/split",
        "(n,)",
        "uint8",
        "block",
        "block",
        "0 train, 1 val, 2 test",
        dims=("sample",),
    ),
    ArraySchema(
        "samples/transform",
        "(n, 4, 4)",
        "float64",
        "block",
        "block",
        "crystal Cartesian Å -> box Å",
        dims=("sample", "row", "column"),
    ),
    ArraySchema(
        "samples/n_atoms",
        "(n,)",
        "int32",
        "block",
        "block",
        "ground-truth atoms inside the box",
        dims=("sample",),
    ),
    ArraySchema(
        "samples/n_outside",
        "(n,)",
        "int32",
        "block",
        "block",
        "`single`: cell atoms outside the box; 0 for `repeated`",
        dims=("sample",),
    ),
    ArraySchema(
        "samples/atom_offset",
        "(n + 1,)",
        "int64",
        1 << 16,
        "final",
        "atoms of sample s: `atom_offset[s]:atom_offset[s+1]`",
        dims=("sample_edge",),
    ),
    ArraySchema(
        "atoms/position",
        "(m, 3)",
        "float32",
        1 << 13,
        "final",
        "box Å, atoms inside `[0, side)^3`",
        dims=("atom", "axis"),
    ),
    ArraySchema(
        "atoms/number", "(m,)", "uint8", 1 << 13, "final", "atomic numbers", dims=("atom",)
    ),
    ArraySchema("crystals/material_id", "(c,)", "str", 4096, "final", "", dims=("crystal",)),
    ArraySchema(
        "crystals/split",
        "(c,)",
        "uint8",
        4096,
        "final",
        "the split of each crystal",
        dims=("crystal",),
    ),
    ArraySchema(
        "crystals/source_index",
        "(c,)",
        "int64",
        4096,
        "final",
        "position of the crystal in the source, among those kept",
        dims=("crystal",),
    ),
    ArraySchema(
        "crystals/lattice",
        "(c, 3, 3)",
        "float64",
        4096,
        "final",
        "rows are lattice vectors, Å",
        dims=("crystal", "vector", "axis"),
    ),
    ArraySchema(
        "crystals/site_offset",
        "(c + 1,)",
        "int64",
        4096,
        "final",
        "ragged index into `frac` / `number`",
        dims=("crystal_edge",),
    ),
    ArraySchema(
        "crystals/frac",
        "(s, 3)",
        "float64",
        1 << 16,
        "final",
        "fractional coordinates as given by the source",
        dims=("site", "axis"),
    ),
    ArraySchema(
        "crystals/number", "(s,)", "uint8", 1 << 16, "final", "atomic numbers", dims=("site",)
    ),
    ArraySchema(
        "crystals/properties/<name>",
        "(c,)",
        "float64",
        4096,
        "final",
        "numeric properties of the source (NaN if missing)",
        dims=("crystal",),
    ),
    ArraySchema(
        "rejects/material_id",
        "(r,)",
        "str",
        4096,
        "final",
        "every structure left out",
        dims=("reject",),
    ),
    ArraySchema(
        "rejects/reason", "(r,)", "str", 4096, "final", "a stable word (below)", dims=("reject",)
    ),
    ArraySchema("rejects/detail", "(r,)", "str", 4096, "final", "a sentence", dims=("reject",)),
)
# (Also in every store: ``checksums/<array path>`` (chunks,) uint64, the digest of each
# chunk's values (:data:`CHECKSUM`), and ``_build/done`` (blocks,) uint8, build bookkeeping.)

#: Arrays whose every chunk is checksummed when it is written by a block.
BLOCK_ARRAYS = tuple(a.path for a in SCHEMA if a.checksum == "block")


def array_schema(path: str) -> ArraySchema:
    """The schema entry of an array path (``crystals/properties/x`` matches ``<name>``).

    Raises:
        KeyError: for a path the format does not have.
    """
    for entry in SCHEMA:
        if entry.path == path:
            return entry
        prefix, placeholder, rest = entry.path.partition("<name>")
        if placeholder and not rest and path.startswith(prefix) and "/" not in path[len(prefix) :]:
            return entry
    raise KeyError(f"{path!r} is not an array of {FORMAT}")


def dimension_names(path: str) -> tuple[str, ...]:
    """The dimension names of any array of a finished store: :data:`SCHEMA`'s, then
    ``checksums/.../<name>`` -> ``("<name>_chunk",)`` and ``_build/done`` -> ``("block",)``.

    Raises:
        KeyError: for a path the format does not have.
    """
    if path.startswith("checksums/"):
        return (f"{path.rsplit('/', 1)[-1]}_chunk",)
    if path == "_build/done":
        return ("block",)
    return array_schema(path).dims


def schema_table() -> str:
    """:data:`SCHEMA` as the markdown table of docs/store-format.md."""
    dtypes = {"density": "float32 or float16", "str": "string"}
    chunks = {"grid": "(chunk_samples, B, B, B)", "block": "block"}
    lines = ["| path | shape | dtype | chunks | checksummed | notes |", "|---|---|---|---|---|---|"]
    for a in SCHEMA:
        chunk = chunks[a.chunk] if isinstance(a.chunk, str) else f"{a.chunk:,}"
        when = "as written" if a.checksum == "block" else "at the end"
        lines.append(
            f"| `{a.path}` | {a.shape} | {dtypes.get(a.dtype, a.dtype)} | {chunk} | {when} "
            f"| {a.notes} |"
        )
    return "\n".join(lines) + "\n"


CODECS = ("lz4", "zstd", "lz4hc")
_CNAMES: dict[str, Literal["lz4", "zstd", "lz4hc"]] = {
    "lz4": "lz4",
    "zstd": "zstd",
    "lz4hc": "lz4hc",
}


def compressor(cname: str = "zstd", level: int = 5) -> BloscCodec:
    """Blosc with byte shuffle; ``cname`` one of :data:`CODECS`.

    The build's defaults (docs/benchmarks.md has the measurements): lz4 for the density
    (about 10% larger than zstd but several times faster to write and ~1.5x faster to
    read), zstd for everything else (species grids compress ~150x).

    Raises:
        ConfigError: another codec (also a ``ValueError``).
    """
    if cname not in _CNAMES:
        raise ConfigError(f"codec must be one of {CODECS}, got {cname!r}")
    return BloscCodec(cname=_CNAMES[cname], clevel=level, shuffle="shuffle")
