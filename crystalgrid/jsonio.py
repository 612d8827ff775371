"""JSON helpers shared by the modules that write records (logs, results, provenance): the hook
for numpy values and paths, and the UTC timestamp records carry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["jsonable", "utc_now"]


def jsonable(value: Any) -> Any:
    """``json.dumps(default=...)`` hook: numpy scalars and arrays, and paths.

    Raises:
        TypeError: for anything else, as ``json`` expects.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def utc_now() -> str:
    """The current UTC time as ISO 8601 with seconds, e.g. ``2025-11-25T09:30:00+00:00``."""
    return datetime.now(UTC).isoformat(timespec="seconds")
