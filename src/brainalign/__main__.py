"""``python -m brainalign`` runs the command line."""

from brainalign.cli import run

run()
