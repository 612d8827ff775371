"""One command from structures to a scored baseline: build, train, evaluate, report.

- :mod:`~crystalgrid.benchmark.budgets`: the budgets (``budgets.json``, package data).
- :mod:`~crystalgrid.benchmark.run`: :func:`run_benchmark`, the run itself.
- :mod:`~crystalgrid.benchmark.report`: ``results.json``, ``results.md`` and the pictures.
"""

from crystalgrid.benchmark.budgets import BUDGETS, Budget, load_budgets
from crystalgrid.benchmark.run import run_benchmark, training_seconds

__all__ = ["BUDGETS", "Budget", "load_budgets", "run_benchmark", "training_seconds"]
