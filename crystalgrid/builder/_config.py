"""What a build makes: :class:`BuildConfig`, and the fingerprint of a store's contents."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from crystalgrid.config_base import Config
from crystalgrid.errors import ConfigError
from crystalgrid.filters import FilterConfig
from crystalgrid.grids.numpy_backend import DENSITY_METHOD
from crystalgrid.grids.placement import REPRESENTATIONS, Representation
from crystalgrid.spec import GridSpec
from crystalgrid.splits import METHODS, split_file_digest
from crystalgrid.store import CODECS, FORMAT

__all__ = ["MAX_ERROR_SHARE", "BuildConfig", "build_fingerprint"]

#: The largest share of a source's records that may fail with an unexpected error (reject
#: reason ``error``) before the build stops.
MAX_ERROR_SHARE = 0.001


@dataclass(frozen=True, kw_only=True)
class BuildConfig(Config):
    """Everything that decides a dataset's contents (its fingerprint covers all of it).

    Attributes:
        representation: ``"single"`` or ``"repeated"``.
        spec: grid geometry.
        samples_per_crystal: samples per crystal (the paper: 3 of each representation).
        seed: seeds every random choice (rotations, offsets, splits).
        rotate: rotate samples; None means the representation's default.
        split_fractions: train, val, test fractions of crystals.
        split_by: how crystals are split (:mod:`crystalgrid.splits`): ``"auto"`` (the
            source's splits when it has them, else ``"random"``), ``"random"``,
            ``"composition"``, ``"chemsys"`` or ``"source"``.
        chunk_samples: samples per chunk of the grid arrays (match training batches).
        block_samples: target samples per task; rounded to whole chunks and crystals.
        dtype: ``"float32"`` or ``"float16"`` for the density.
        codec: Blosc compressor of the density (``"lz4"``, ``"zstd"``, ``"lz4hc"``).
        compression_level: its level (1-9).
        filters: which structures are kept.
    """

    representation: Representation = "repeated"
    spec: GridSpec = field(default_factory=GridSpec)
    samples_per_crystal: int = 3
    seed: int = 0
    rotate: bool | None = None
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by: str = "auto"
    chunk_samples: int = 24
    block_samples: int = 240
    dtype: str = "float32"
    codec: str = "lz4"
    compression_level: int = 5
    filters: FilterConfig = field(default_factory=FilterConfig)

    config_name = "build configuration"

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ConfigError(
                f"representation must be one of {', '.join(REPRESENTATIONS)}, "
                f"got {self.representation!r}"
            )
        if self.samples_per_crystal < 1:
            raise ConfigError("samples per crystal must be at least 1")
        fractions = tuple(float(f) for f in self.split_fractions)
        if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
            raise ConfigError(
                f"split fractions must be three numbers >= 0 summing to 1, got {fractions}"
            )
        object.__setattr__(self, "split_fractions", fractions)
        if self.split_by not in METHODS:
            raise ConfigError(
                f"split method must be one of {', '.join(METHODS)}, got {self.split_by!r}"
            )
        if self.chunk_samples < 1 or self.block_samples < 1:
            raise ConfigError("chunk and block sizes must be positive")
        if self.dtype not in ("float32", "float16"):
            raise ConfigError(f"density dtype must be float32 or float16, got {self.dtype!r}")
        if self.codec not in CODECS:
            raise ConfigError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if not 1 <= self.compression_level <= 9:
            raise ConfigError("compression level must be in 1..9")

    @property
    def block_crystals(self) -> int:
        """Crystals per task: a whole number of chunks, near ``block_samples`` samples."""
        unit = math.lcm(self.chunk_samples, self.samples_per_crystal)
        return unit * max(1, round(self.block_samples / unit)) // self.samples_per_crystal


def build_fingerprint(
    config: BuildConfig, source_fingerprint: str, table: dict[str, str] | None = None
) -> str:
    """SHA-256 (hex) of what decides a store's contents: the format, the configuration, the
    source's fingerprint, the density method and the split file's digest (if any)."""
    content = {
        "format": FORMAT,
        "config": config.to_dict(),
        "source": source_fingerprint,
        "density_method": DENSITY_METHOD,
    }
    if table:
        content["splits"] = split_file_digest(table)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
