"""One command from structures to a scored baseline: build, train, evaluate, report.

- :mod:`~crystalgrid.baseline.budgets`: the budgets (``budgets.json``, package data).
- :mod:`~crystalgrid.baseline.run`: :func:`run_baseline`, the run itself.
- :mod:`~crystalgrid.baseline.report`: ``results.json``, ``results.md`` and the pictures.
"""

from crystalgrid.baseline.budgets import BUDGETS, Budget, load_budgets
from crystalgrid.baseline.run import run_baseline, training_seconds

__all__ = ["BUDGETS", "Budget", "load_budgets", "run_baseline", "training_seconds"]
