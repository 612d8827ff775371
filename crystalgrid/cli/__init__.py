"""The ``crystalgrid`` command: a click group whose verbs are thin wrappers over the library.

The group and the error convention live in :mod:`crystalgrid.cli.app`; each verb module
(``dataset_verbs``, ``fetch_verbs``, ``training_verbs``, ``scoring_verbs``, ``latent_verbs``,
``baseline_verbs``: one family of verbs each) registers its verbs on
:data:`~crystalgrid.cli.app.main` when imported here. A verb turns a
:class:`crystalgrid.errors.CrystalgridError` into one line on stderr and exit status 2;
heavy imports (torch, mp-api) happen inside the verbs.
"""

from __future__ import annotations

from crystalgrid.cli import (
    baseline_verbs,
    dataset_verbs,
    fetch_verbs,
    latent_verbs,
    scoring_verbs,
    training_verbs,
)
from crystalgrid.cli.app import main, user_errors

__all__ = [
    "baseline_verbs",
    "dataset_verbs",
    "fetch_verbs",
    "latent_verbs",
    "main",
    "scoring_verbs",
    "training_verbs",
    "user_errors",
]
