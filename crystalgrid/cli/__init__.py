"""The ``crystalgrid`` command: a click group whose verbs are thin wrappers over the library.

The group and the error convention live in :mod:`crystalgrid.cli.app`; each verb module
(``dataset_verbs``, ``fetch_verbs``, ``model_verbs``) registers its verbs on
:data:`~crystalgrid.cli.app.main` when imported here. A verb turns a
:class:`crystalgrid.errors.CrystalgridError` into one line on stderr and exit status 2;
heavy imports (torch, mp-api) happen inside the verbs.
"""

from __future__ import annotations

from crystalgrid.cli import dataset_verbs, fetch_verbs, model_verbs
from crystalgrid.cli.app import main, user_errors

__all__ = ["dataset_verbs", "fetch_verbs", "main", "model_verbs", "user_errors"]
