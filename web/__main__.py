"""``python -m web [--host H] [--port P]``: serve the health routes (no migration, no seeding).

``defeah-db up`` is the one-stop command for development; this entry point is what a process
manager runs in front of an already-migrated database.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from dal.cli import add_address_arguments
from dal.config import Settings
from dal.errors import DalError
from web.app import bind_error, configure_logging, serve, with_address


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web", description=__doc__)
    add_address_arguments(parser)
    args = parser.parse_args(argv)
    sink = configure_logging()
    try:
        settings = with_address(Settings.from_env(), args.host, args.port)
        asyncio.run(serve(settings, sink))
    except DalError as exc:
        print(f"web: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:  # typically: the address is already in use
        print(f"web: error: {bind_error(exc)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
