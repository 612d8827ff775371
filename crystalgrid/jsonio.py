"""JSON helpers shared by the modules that write records (logs, results, provenance)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["jsonable"]


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
