"""``python -m fveseg.cli`` runs the ``fveseg`` command."""

import sys

from fveseg.cli import main

sys.exit(main())
