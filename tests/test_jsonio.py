"""Results documents: strict JSON whatever numbers they hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crystalgrid.jsonio import results_json, write_results


def test_results_are_strict_json_with_null_for_non_finite_numbers(tmp_path):
    data = {
        "score": float("nan"),
        "rate": np.float32(0.5),
        "per_sample": np.array([1.0, np.nan, np.inf]),
        "nested": [{"x": np.int64(3), "path": Path("a/b")}, (float("-inf"),)],
    }
    text = results_json(data)
    assert json.loads(text) == {
        "score": None,
        "rate": 0.5,
        "per_sample": [1.0, None, None],
        "nested": [{"x": 3, "path": "a/b"}, [None]],
    }
    path = write_results(tmp_path / "deep" / "results.json", data)
    assert path.read_text() == text + "\n"
