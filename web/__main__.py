"""``python -m web [--host H] [--port P]``: serve the health routes (no migration, no seeding).

``defeah-db up`` is the one-stop command for development; this entry point is what a process
manager runs in front of an already-migrated database.  ``defeah-db serve`` is the same thing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dal.db.settings import Settings
from dal.errors import DalError
from dal.instagram.keyring import settings_cipher
from web.app import add_address_arguments, run_server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web", description=__doc__)
    add_address_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        settings_cipher(settings, "python -m web")
        settings.require_callbacks("python -m web")
        return run_server(settings, args.host, args.port, "web")
    except DalError as exc:
        print(f"web: error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
