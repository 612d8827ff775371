"""``python -m crystalgrid`` runs the CLI."""

from crystalgrid.cli import main

main()
