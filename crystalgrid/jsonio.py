"""JSON helpers shared by the modules that write records (logs, results, provenance): the hook
for numpy values and paths, and the UTC timestamp records carry."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["jsonable", "results_json", "utc_now", "write_results"]


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


def results_json(data: Any) -> str:
    """A results document as JSON text: indented by one space, numpy values and paths made
    plain, a non-finite number written as ``null`` (strict JSON, which has no NaN)."""
    return json.dumps(_finite(data), indent=1, allow_nan=False, default=jsonable)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by ``None``."""
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_results(path: str | Path, data: Any) -> Path:
    """Write a results document (:func:`results_json`) to ``path``, its folder made if needed,
    atomically (a reader never sees half a file). Returns the path."""
    from crystalgrid.fileio import write_atomic

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, (results_json(data) + "\n").encode("utf-8"))
    return target
