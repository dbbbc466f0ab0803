"""``python -m fveseg.cli`` runs the ``fveseg`` command."""

import sys

from fveseg.cli import console

sys.exit(console())
