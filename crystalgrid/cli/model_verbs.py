"""CLI verbs (registered on ``crystalgrid.cli.main``)."""

from __future__ import annotations

from crystalgrid.cli import main, user_errors  # noqa: F401
