"""The ``defeah-db`` parser and entry point.

Each verb is a small function taking parsed arguments and the settings and returning an exit
code.  Expected failures (``DalError``: bad configuration, database down, migration refused)
print one line on stderr and exit non-zero; ``--traceback`` shows the Python traceback.
Without ``DATABASE_URL`` every verb runs against the embedded server, started for the duration
of the command.  Every verb that deletes data refuses a production target with exit 2 unless
given ``--force`` (``dal.db.production_guard``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cli import data_verbs, instagram_verbs, privacy_verbs, schema_verbs, serve_verbs
from cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_REFUSED, EXIT_TERMINATED, Verb
from dal.db.settings import Settings
from dal.errors import DalError, ProductionRefused, Terminated


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defeah-db",
        description="Defeah database tools. Without DATABASE_URL an embedded PostgreSQL is used.",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the Python traceback on errors"
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, func: Verb, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    serve_verbs.register(verb)
    schema_verbs.register(verb)
    data_verbs.register(verb)
    instagram_verbs.register(verb)
    privacy_verbs.register(verb)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    # psql takes its own options (-c, -f, ...): everything after the verb goes to it untouched.
    passthrough: list[str] = []
    if "psql" in words:
        cut = words.index("psql") + 1
        words, passthrough = words[:cut], words[cut:]
    args = parser.parse_args(words)
    if args.verb == "psql":
        args.args = passthrough
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        code: int = args.func(args, settings)
    except ProductionRefused as exc:
        print(f"defeah-db: {exc}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    except DalError as exc:
        if args.traceback:
            raise
        # Last line of defence: whatever a driver quoted into the message, no secret leaves.
        text = str(exc) if settings is None else settings.scrub(str(exc))
        print(f"defeah-db: error: {text}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except Terminated as exc:
        print(f"defeah-db: {exc}", file=sys.stderr, flush=True)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("defeah-db: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return code
