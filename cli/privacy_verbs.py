"""Verbs for personal data: erase, export, and erase again after a restore (docs/security.md).

``erase-user`` and ``reapply-erasures`` delete data, so they refuse production without
``--force``.  ``erase-user``, ``reapply-erasures`` and ``export-user`` need
``DEFEAH_ERASURE_PEPPER`` on staging/production (the receipts are keyed with it);
``erasure-receipts`` prints receipts only, which hold no personal data, and needs no pepper.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TextIO

from cli.common import EXIT_OK, FORCE_HELP, AddVerb, say, with_database
from dal.db.database import Database
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.errors import ConfigError
from dal.users import erasure, export
from dal.users.receipts import Receipt, settings_pepper


def cmd_erase_user(args: argparse.Namespace, settings: Settings) -> int:
    pepper = settings_pepper(settings, "erase-user")
    with target_dsn(settings) as dsn:
        report = with_database(
            settings, dsn, lambda db: erasure.erase(db, args.user, pepper, force=args.force)
        )
    say(
        f"erased user {report.user_id}: the account, its Instagram connection, "
        f"{report.events} sign-in event(s), {report.budgets} budget row(s); "
        f"receipt at {report.erased_at.isoformat()}"
    )
    return EXIT_OK


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    """stdout, or ``path`` written privately (mode 0600) and renamed into place when complete,
    so a failed export leaves no partial file of personal data behind."""
    if path is None:
        yield sys.stdout
        return
    # mkstemp: a fresh name, O_EXCL and 0600, so a file or symbolic link planted beside the
    # target is never written through or left readable by others.
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    partial = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            yield out
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def cmd_export_user(args: argparse.Namespace, settings: Settings) -> int:
    pepper = settings_pepper(settings, "export-user")
    with target_dsn(settings) as dsn, _output(args.output) as out:
        events = with_database(settings, dsn, lambda db: export.export(db, args.user, pepper, out))
    if args.output is not None:
        say(f"exported {events} sign-in event(s) to {args.output}")
    return EXIT_OK


def _read_receipts(path: Path) -> list[Receipt]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return [
        Receipt.from_line(line, f"{path}:{number}")
        for number, line in enumerate(lines, 1)
        if line.strip()
    ]


def cmd_reapply_erasures(args: argparse.Namespace, settings: Settings) -> int:
    pepper = settings_pepper(settings, "reapply-erasures")
    brought = [] if args.receipts is None else _read_receipts(args.receipts)

    def job(db: Database) -> Awaitable[erasure.ReapplyReport]:
        return erasure.reapply(db, pepper, brought, force=args.force)

    with target_dsn(settings) as dsn:
        report = with_database(settings, dsn, job)
    say(
        f"{report.receipts} receipt(s): erased again {report.users} user(s), "
        f"{report.events} sign-in event(s), {report.budgets} budget row(s)"
    )
    return EXIT_OK


def cmd_erasure_receipts(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        found = with_database(settings, dsn, erasure.receipts)
    text = "".join(receipt.to_line() + "\n" for receipt in found)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        say(f"wrote {len(found)} receipt(s) to {args.output}")
    return EXIT_OK


def register(verb: AddVerb) -> None:
    who = "a user id or an email (any case)"
    er = verb("erase-user", cmd_erase_user, "erase a user and everything held about them")
    er.add_argument("user", metavar="EMAIL|ID", help=who)
    er.add_argument("--force", action="store_true", help=FORCE_HELP)
    ex = verb("export-user", cmd_export_user, "write everything held about a user as JSON")
    ex.add_argument("user", metavar="EMAIL|ID", help=who)
    ex.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write to FILE (mode 0600), not stdout"
    )
    ra = verb(
        "reapply-erasures",
        cmd_reapply_erasures,
        "after restoring a backup, erase again everyone erased since it was taken",
    )
    ra.add_argument(
        "--receipts",
        type=Path,
        metavar="FILE",
        help="receipts kept outside the backup (`erasure-receipts` output), added to the table's",
    )
    ra.add_argument("--force", action="store_true", help=FORCE_HELP)
    rc = verb(
        "erasure-receipts",
        cmd_erasure_receipts,
        "print the erasure receipts (no personal data), one JSON line each",
    )
    rc.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE")
