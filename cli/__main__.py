"""``python -m cli`` runs the defeah-db command line."""

import sys

from cli.main import main

sys.exit(main())
