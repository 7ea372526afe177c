"""``python -m dal`` runs the defeah-db command line."""

import sys

from dal.cli import main

sys.exit(main())
