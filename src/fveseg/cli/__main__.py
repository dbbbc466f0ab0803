"""``python -m fveseg.cli`` runs the ``fveseg`` command."""

from fveseg.cli import console

console()
