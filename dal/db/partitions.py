"""The partition rule: how every partitioned table of ours is laid out, checked in one place.

A partitioned table ``P`` has one default partition, ``P_default``, and range partitions of one
UTC month each, named ``P_pYYYYMM`` and bounded by exactly that month.  Which months exist
depends on the date (migration 0005 creates this month and the next two; ``defeah-db
maintain-events`` keeps months ahead; retention drops old ones), so nothing date-specific may
be part of the expected schema.  This module turns the catalog rows of
``dal/queries/catalog.sql`` into:

* the *shared* entries: every object that is not a monthly partition (the parent, its default
  partition, the other tables), compared with the snapshot as they are;
* one entry set per monthly partition, its own name replaced by ``P_p<YYYYMM>``, so that every
  month, whatever months exist, is compared with the same *template* (the snapshot holds it
  once);
* breaches of the rule, each naming the partition: a child attached under another name, bounds
  that do not match the name, a table named like a partition but not attached.

It also says what partition upkeep should look at (``findings``): a missing partition for the
current or the next month, rows waiting in a default partition.  Drift and readiness report
these; ``maintain-events`` and ``prune-events`` refuse to touch a table that breaks the rule
(``require_sound``), so a wrongly bounded partition is never dropped by its name.

Bounds are compared as PostgreSQL prints them under ``TimeZone=UTC`` (the reader sets it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

from dal.db.connections import Connection
from dal.db.statements import run
from dal.errors import DatabaseUnavailable, PartitionLayoutInvalid
from dal.queries import load

MONTH: Final = "<YYYYMM>"
DEFAULT_SUFFIX: Final = "_default"
MAINTAIN: Final = "defeah-db maintain-events"
CATALOG_SQL: Final = load("catalog")
_MONTHLY: Final = re.compile(r"(?P<parent>\w+)_p(?P<year>[0-9]{4})(?P<month>[0-9]{2})")


class Row(NamedTuple):
    """One row of ``schema_objects``: ``kind name: definition`` and the relation it belongs to."""

    kind: str
    name: str
    definition: str
    rel: str | None

    @property
    def key(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Difference:
    key: str
    expected: str | None
    found: str | None

    def line(self) -> str:
        if self.found is None:
            return f"missing {self.key}: {self.expected}"
        if self.expected is None:
            return f"unexpected {self.key}: {self.found}"
        return f"changed {self.key}: expected {self.expected!r}, found {self.found!r}"


def compare(want: Mapping[str, str], have: Mapping[str, str]) -> list[Difference]:
    return [
        Difference(key, want.get(key), have.get(key))
        for key in sorted(want.keys() | have.keys())
        if want.get(key) != have.get(key)
    ]


def template_name(parent: str) -> str:
    return f"{parent}_p{MONTH}"


def month_name(parent: str, year: int, month: int) -> str:
    return f"{parent}_p{year:04d}{month:02d}"


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def monthly_bounds(year: int, month: int) -> str:
    """How PostgreSQL prints the bounds of the partition of that month, under TimeZone=UTC."""
    ny, nm = next_month(year, month)
    return (
        f"FOR VALUES FROM ('{year:04d}-{month:02d}-01 00:00:00+00') "
        f"TO ('{ny:04d}-{nm:02d}-01 00:00:00+00')"
    )


TEMPLATE_BOUNDS: Final = "FOR VALUES FROM (<the month's first instant, UTC>) TO (<the next's>)"


def parse_month(child: str, parent: str) -> tuple[int, int] | None:
    """(year, month) of a well-formed monthly partition name of ``parent``, else None."""
    match = _MONTHLY.fullmatch(child)
    if match is None or match["parent"] != parent:
        return None
    year, month = int(match["year"]), int(match["month"])
    if year < 1 or not 1 <= month <= 12:
        return None
    return year, month


def _rename(text: str, old: str, new: str) -> str:
    """``text`` with the identifier ``old`` (and names built on it, ``old_pkey``) as ``new``."""
    return re.sub(rf"(?<![A-Za-z0-9_]){re.escape(old)}(?![0-9])", new, text)


@dataclass
class Partitioned:
    """One partitioned table as found: its monthly partitions and whether its default exists."""

    name: str
    months: dict[tuple[int, int], str] = field(default_factory=dict)
    default: str | None = None


@dataclass
class Layout:
    """The catalog split by the partition rule (see the module docstring)."""

    shared: dict[str, str]
    monthly: dict[str, dict[str, str]]  # partition name -> its entries, name as the template
    parents: dict[str, Partitioned]
    breaches: list[Difference]
    month_of: dict[str, str]  # monthly partition name -> its parent

    def template(self) -> dict[str, str]:
        """The entries every monthly partition shares, under the template names (the snapshot's
        part); ``PartitionLayoutInvalid`` when the months differ or break the rule."""
        if self.breaches:
            raise PartitionLayoutInvalid(self.breaches[0].line())
        shapes: dict[str, dict[str, str]] = {}
        for child, entries in sorted(self.monthly.items()):
            parent = self.month_of[child]
            first = shapes.setdefault(parent, entries)
            if entries != first:
                diff = compare(first, entries)[0]
                raise PartitionLayoutInvalid(
                    f"monthly partitions of {parent} differ: {_denormalize(diff, child).line()}"
                )
        return {key: value for entries in shapes.values() for key, value in entries.items()}

    def differences(self, expected: Mapping[str, str]) -> list[Difference]:
        """Drift against ``expected`` (a snapshot): shared entries as they are, each monthly
        partition against the template, breaches of the rule; every line names its object."""
        templated = {k: v for k, v in expected.items() if MONTH in k}
        shared = {k: v for k, v in expected.items() if MONTH not in k}
        found = compare(shared, self.shared)
        for child, entries in sorted(self.monthly.items()):
            prefix = template_name(self.month_of[child])
            want = {k: v for k, v in templated.items() if prefix in k}
            found += [_denormalize(d, child) for d in compare(want, entries)]
        return sorted(found + self.breaches, key=lambda d: d.key)

    def require_sound(self, parent: str) -> Partitioned:
        """``parent``'s partitions, or ``PartitionLayoutInvalid`` naming the first breach (or the
        missing default partition): partition upkeep touches nothing of a table it cannot read."""
        table = self.parents.get(parent)
        if table is None:
            raise PartitionLayoutInvalid(f"{parent} is not a partitioned table")
        mine = [b for b in self.breaches if _names(b, parent)]
        if mine:
            raise PartitionLayoutInvalid(f"{mine[0].line()}; fix it by hand first")
        if table.default is None:
            raise PartitionLayoutInvalid(
                f"{parent} has no default partition {parent}{DEFAULT_SUFFIX} "
                f"(migration 0005 creates it; see `defeah-db drift`)"
            )
        return table


def _names(breach: Difference, parent: str) -> bool:
    return breach.key.split(" ", 1)[-1].startswith(parent)


def _denormalize(diff: Difference, child: str) -> Difference:
    year_month = child[-6:]

    def fill(text: str | None) -> str | None:
        return None if text is None else text.replace(MONTH, year_month)

    return Difference(fill(diff.key) or diff.key, fill(diff.expected), fill(diff.found))


def split(rows: Iterable[Row]) -> Layout:
    """Apply the partition rule to the catalog rows of ``schema_objects``."""
    rows = list(rows)
    parents = {r.name: Partitioned(r.name) for r in rows if r.kind == "partitioned"}
    tables = {r.name for r in rows if r.kind == "table"}
    attached: dict[str, tuple[str, str]] = {}
    for r in rows:
        if r.kind == "partition":
            parent, _, bounds = r.definition.removeprefix("of ").partition(" ")
            attached[r.name] = (parent, bounds)

    breaches: list[Difference] = []
    month_of: dict[str, str] = {}
    excluded: set[str] = set()  # relations reported as one breach line, not entry by entry
    for child, (parent, bounds) in sorted(attached.items()):
        table = parents.get(parent)
        if table is None:
            continue
        if bounds == "DEFAULT":
            if child == parent + DEFAULT_SUFFIX:
                table.default = child
            else:
                breaches.append(
                    Difference(
                        f"partition {child}",
                        None,
                        f"of {parent} DEFAULT (the default "
                        f"partition must be named {parent}{DEFAULT_SUFFIX})",
                    )
                )
                excluded.add(child)
            continue
        month = parse_month(child, parent)
        if month is None:
            breaches.append(
                Difference(
                    f"partition {child}",
                    None,
                    f"of {parent} {bounds} (not named {parent}_pYYYYMM, a month 01-12)",
                )
            )
            excluded.add(child)
            continue
        month_of[child] = parent
        table.months[month] = child
        want = monthly_bounds(*month)
        if bounds != want:
            breaches.append(
                Difference(f"partition {child}", f"of {parent} {want}", f"of {parent} {bounds}")
            )
    for name in sorted(tables - attached.keys()):
        match = _MONTHLY.fullmatch(name)
        if match is not None and match["parent"] in parents:
            breaches.append(
                Difference(
                    f"table {name}",
                    None,
                    f"named like a monthly partition of {match['parent']} but not attached",
                )
            )
            excluded.add(name)

    shared: dict[str, str] = {}
    monthly: dict[str, dict[str, str]] = {child: {} for child in month_of}
    for r in rows:
        if r.rel in excluded:
            continue
        if r.rel in month_of:
            new = template_name(month_of[r.rel])
            value = r.definition
            if r.kind == "partition":
                value = f"of {month_of[r.rel]} {TEMPLATE_BOUNDS}"
            monthly[r.rel][_rename(r.key, r.rel, new)] = _rename(value, r.rel, new)
        else:
            shared[r.key] = r.definition
    return Layout(shared, monthly, parents, breaches, month_of)


@dataclass(frozen=True)
class Finding:
    """Something partition upkeep should do, not a schema difference."""

    parent: str
    text: str

    def line(self) -> str:
        return f"partition: {self.text}"


def findings(
    layout: Layout,
    now: datetime,
    default_rows: Mapping[str, int],
    retention: timedelta | None = None,
) -> list[Finding]:
    """Missing partitions for the database's current and next UTC month, rows waiting in a
    default partition (``default_rows``: counts by default partition name), and with
    ``retention`` the monthly partitions whose month ended longer ago (retention overdue)."""
    utc = now.astimezone(UTC)
    current = (utc.year, utc.month)
    coming = (("the current month", current), ("the next month", next_month(*current)))
    found: list[Finding] = []
    for name, table in sorted(layout.parents.items()):
        for label, month in coming:
            if month not in table.months:
                found.append(
                    Finding(
                        name,
                        f"missing {month_name(name, *month)} for {label}: its rows go to the "
                        f"default partition; `{MAINTAIN}` creates it",
                    )
                )
        if retention is not None:
            found += _overdue(table, utc - retention, retention)
        rows = default_rows.get(table.default or "", 0)
        if rows:
            count = "1,000 or more" if rows >= 1000 else f"{rows}"
            found.append(
                Finding(
                    name,
                    f"{count} row(s) in {table.default} (months without a partition); "
                    f"`{MAINTAIN}` moves those of the months it creates, `defeah-db "
                    "prune-events` removes old ones",
                )
            )
    return found


def _overdue(table: Partitioned, cutoff: datetime, retention: timedelta) -> list[Finding]:
    """The months of ``table`` that ended at or before ``cutoff``: kept past retention."""
    late = [
        name
        for (year, month), name in sorted(table.months.items())
        if datetime(*next_month(year, month), 1, tzinfo=UTC) <= cutoff
    ]
    if not late:
        return []
    return [
        Finding(
            table.name,
            f"retention overdue: {', '.join(late)} ended more than {retention.days} day(s) ago; "
            f"`{MAINTAIN}` drops them",
        )
    ]


@dataclass(frozen=True)
class LiveSchema:
    """What one read of the live catalog found: the layout and the upkeep findings."""

    layout: Layout
    findings: tuple[Finding, ...]

    def differences(self, expected: Mapping[str, str]) -> list[Difference]:
        return self.layout.differences(expected)


def _one_line(text: str) -> str:
    return text.strip().replace("\\", "\\\\").replace("\n", "\\n")


async def read_live(conn: Connection, retention: timedelta | None = None) -> LiveSchema:
    """The live schema seen through ``conn``, a session whose TimeZone is UTC (the pool's);
    with ``retention``, partitions kept past it are findings too."""
    clock = (await run(conn, CATALOG_SQL["catalog_clock"], {}))[0]
    if clock["timezone"] != "UTC":  # bounds would print in another zone and all look wrong
        raise DatabaseUnavailable(f"the catalog session runs in {clock['timezone']}, not UTC")
    rows = [
        Row(r["kind"], r["name"], _one_line(r["definition"]), r["rel"])
        for r in await run(conn, CATALOG_SQL["schema_objects"], {})
    ]
    layout = split(rows)
    counts: dict[str, int] = {}
    for table in layout.parents.values():
        if table.default is not None:
            query = CATALOG_SQL["default_partition_rows"]
            named = replace(query, sql=query.sql.format(partition=_identifier(table.default)))
            counts[table.default] = int((await run(conn, named, {}))[0]["n"])
    return LiveSchema(layout, tuple(findings(layout, clock["now"], counts, retention)))


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
