"""The partition rule on a live database: well-formed months are never drift, whatever months
exist; every breach is reported by name; upkeep findings say what to run; partition upkeep
refuses a table that breaks the rule and changes nothing.  Nothing here assumes today's date:
months are computed from the database's clock."""

from __future__ import annotations

import concurrent.futures
import re
from datetime import UTC, datetime

import pytest

from dal.db import partitions
from dal.migrations import drift
from tests.commands import run_cli
from tests.pg import query

MONTHLY = re.compile(r"auth_events_p[0-9]{6}")


def months(dsn: str, *offsets: int) -> list[str]:
    """Names of the monthly partitions ``offsets`` months from the database's current month."""
    rows = query(
        dsn,
        "SELECT 'auth_events_p' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') "
        "+ make_interval(months => o), 'YYYYMM') AS name FROM unnest(%s::int[]) AS o",
        (list(offsets),),
    )
    return [r["name"] for r in rows]


def attached(dsn: str) -> list[str]:
    rows = query(
        dsn,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'auth_events'::regclass ORDER BY 1",
    )
    return [r["relname"] for r in rows]


def drift_lines(dsn: str) -> tuple[int, list[str]]:
    done = run_cli(dsn, "drift")
    return done.returncode, done.stdout.splitlines()


def test_the_snapshot_names_no_month() -> None:
    text = drift.SNAPSHOT.read_text(encoding="utf-8")
    assert MONTHLY.search(text) is None
    assert "table auth_events_p<YYYYMM>:" in text
    assert "partition auth_events_default: of auth_events DEFAULT" in text


def test_any_set_of_well_formed_months_is_no_drift(fresh_dsn: str) -> None:
    """Twelve months ahead and three in the past (one December, so the year rolls): clean."""
    done = run_cli(fresh_dsn, "maintain-events", "--months-ahead", "12")
    assert done.returncode == 0, done.stderr
    for year, month in ((2019, 11), (2019, 12), (2020, 1)):
        ny, nm = partitions.next_month(year, month)
        query(
            fresh_dsn,
            f"CREATE TABLE auth_events_p{year}{month:02d} PARTITION OF auth_events "
            f"FOR VALUES FROM ('{year}-{month:02d}-01 00:00+00') TO ('{ny}-{nm:02d}-01 00:00+00')",
        )
        query(
            fresh_dsn,
            f"COMMENT ON TABLE auth_events_p{year}{month:02d} IS %s",
            ("auth_events of one UTC month",),
        )
    expected = {*months(fresh_dsn, *range(13)), "auth_events_p201911", "auth_events_p201912"}
    assert expected | {"auth_events_p202001", "auth_events_default"} <= set(attached(fresh_dsn))
    code, lines = drift_lines(fresh_dsn)
    assert code == 0, lines
    assert lines == [
        f"0 difference(s) from schema.snapshot, 0 partition finding(s) on "
        f"{lines[-1].rsplit(' on ', 1)[1]}"
    ]


def test_a_hand_made_index_or_constraint_on_one_month_is_reported_by_name(fresh_dsn: str) -> None:
    this, nxt = months(fresh_dsn, 0, 1)
    query(fresh_dsn, f"CREATE INDEX hotfix_idx ON {this} (email)")
    query(fresh_dsn, f"CREATE INDEX ON {nxt} (decided_by)")  # named after the month by PG
    query(fresh_dsn, f"ALTER TABLE {nxt} ADD CONSTRAINT short_email CHECK (length(email) < 300)")
    query(fresh_dsn, f"COMMENT ON TABLE {this} IS 'edited'")
    code, lines = drift_lines(fresh_dsn)
    assert code == 1
    keys = sorted(line.split(":")[0] for line in lines[:-1])
    assert keys == sorted(
        [
            f"changed comment table {this}",
            f"unexpected constraint {nxt}.short_email",
            "unexpected index hotfix_idx",
            f"unexpected index {nxt}_decided_by_idx",
        ]
    )
    assert f"ON public.{this} USING btree (email)" in "\n".join(lines)
    assert lines[-1].startswith("4 difference(s)")


def test_breaches_of_the_rule_are_reported_by_name(fresh_dsn: str) -> None:
    nxt = months(fresh_dsn, 1)[0]
    query(
        fresh_dsn,
        "CREATE TABLE auth_events_p203001 PARTITION OF auth_events "
        "FOR VALUES FROM ('2030-01-15 00:00+00') TO ('2030-02-15 00:00+00')",
    )
    query(
        fresh_dsn,
        "CREATE TABLE auth_events_2031 PARTITION OF auth_events "
        "FOR VALUES FROM ('2031-01-01 00:00+00') TO ('2032-01-01 00:00+00')",
    )
    query(fresh_dsn, f"ALTER TABLE auth_events DETACH PARTITION {nxt}")
    code, lines = drift_lines(fresh_dsn)
    assert code == 1
    text = "\n".join(lines)
    assert (
        'changed partition auth_events_p203001: expected "of auth_events FOR VALUES FROM '
        "('2030-01-01 00:00:00+00') TO ('2030-02-01 00:00:00+00')\", found \"of auth_events FOR "
        "VALUES FROM ('2030-01-15 00:00:00+00') TO ('2030-02-15 00:00:00+00')\""
    ) in text
    assert "unexpected partition auth_events_2031: of auth_events FOR VALUES FROM" in text
    assert "(not named auth_events_pYYYYMM, a month 01-12)" in text
    assert f"unexpected table {nxt}: named like a monthly partition of auth_events" in text
    assert f"partition: missing {nxt} for the next month" in text
    # one line per breach, not one per column of the offending tables
    assert not [line for line in lines if line.startswith("unexpected column")]
    assert not [line for line in lines if "auth_events_2031." in line]


def test_missing_months_and_default_rows_are_findings_that_name_the_fix(fresh_dsn: str) -> None:
    this, nxt = months(fresh_dsn, 0, 1)
    query(fresh_dsn, f"DROP TABLE {this}")
    query(fresh_dsn, f"DROP TABLE {nxt}")
    query(
        fresh_dsn,
        "INSERT INTO auth_events (occurred_at, email, result, decided_by) "
        "VALUES (now(), 'a@example.com', 'success', 'password')",
    )
    code, lines = drift_lines(fresh_dsn)
    assert code == 1
    assert lines[:-1] == [
        f"partition: missing {this} for the current month: its rows go to the default "
        "partition; `defeah-db maintain-events` creates it",
        f"partition: missing {nxt} for the next month: its rows go to the default partition; "
        "`defeah-db maintain-events` creates it",
        "partition: 1 row(s) in auth_events_default (months without a partition); "
        "`defeah-db maintain-events` moves those of the months it creates, `defeah-db "
        "prune-events` removes old ones",
    ]
    assert lines[-1].startswith("0 difference(s) from schema.snapshot, 3 partition finding(s)")
    fixed = run_cli(fresh_dsn, "maintain-events")
    assert fixed.returncode == 0, fixed.stderr
    assert f"created partitions: {this}, {nxt}" in fixed.stdout
    assert drift_lines(fresh_dsn)[0] == 0
    assert query(fresh_dsn, f"SELECT count(*) AS n FROM {this}") == [{"n": 1}]


BREAKS = {
    "misnamed": (
        "CREATE TABLE auth_events_p203013 PARTITION OF auth_events "
        "FOR VALUES FROM ('2031-01-01 00:00+00') TO ('2031-02-01 00:00+00')",
        "unexpected partition auth_events_p203013: of auth_events FOR VALUES FROM "
        "('2031-01-01 00:00:00+00') TO ('2031-02-01 00:00:00+00') (not named "
        "auth_events_pYYYYMM, a month 01-12); fix it by hand first",
    ),
    "wrong bounds": (
        "CREATE TABLE auth_events_p202001 PARTITION OF auth_events "
        "FOR VALUES FROM ('2030-01-01 00:00+00') TO ('2031-01-01 00:00+00')",
        'changed partition auth_events_p202001: expected "of auth_events FOR VALUES FROM '
        "('2020-01-01 00:00:00+00') TO ('2020-02-01 00:00:00+00')\", found \"of auth_events FOR "
        "VALUES FROM ('2030-01-01 00:00:00+00') TO ('2031-01-01 00:00:00+00')\"; fix it by "
        "hand first",
    ),
    "no default": (
        "DROP TABLE auth_events_default",
        "auth_events has no default partition auth_events_default (migration 0005 creates "
        "it; see `defeah-db drift`)",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
@pytest.mark.parametrize(
    "verb", [("maintain-events", "--months-ahead", "6"), ("prune-events", "--older-than", "1d")]
)
def test_upkeep_refuses_a_broken_layout_in_one_line_and_changes_nothing(
    fresh_dsn: str, case: str, verb: tuple[str, ...]
) -> None:
    """A partition named January 2020 but holding 2030 would be dropped by its name with every
    newer row in it; prune and maintain refuse to read such a table."""
    statement, message = BREAKS[case]
    query(fresh_dsn, statement)
    when = ["now()"] + ([] if case == "no default" else ["'2030-06-01 00:00+00'"])
    query(
        fresh_dsn,
        "INSERT INTO auth_events (occurred_at, email, result, decided_by) SELECT w, "
        f"'a@example.com', 'success', 'password' FROM unnest(ARRAY[{', '.join(when)}]) AS w",
    )
    before = attached(fresh_dsn), query(fresh_dsn, "SELECT count(*) AS n FROM auth_events")
    done = run_cli(fresh_dsn, *verb)
    assert done.returncode == 1, done.stdout
    assert done.stderr == f"defeah-db: error: {message}\n"
    assert (
        attached(fresh_dsn),
        query(fresh_dsn, "SELECT count(*) AS n FROM auth_events"),
    ) == before


def test_maintain_events_on_several_hosts_at_once_creates_each_month_once(fresh_dsn: str) -> None:
    """Timers on four hosts fire together: one run creates the months, the others wait on the
    advisory lock and find them; all succeed and the catalog is clean."""
    assert run_cli(fresh_dsn, "maintain-events").returncode == 0  # this month and 3 ahead
    for name in months(fresh_dsn, 0, 1, 2):
        query(fresh_dsn, f"DROP TABLE {name}")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: run_cli(fresh_dsn, "maintain-events"), range(4)))
    assert [r.returncode for r in runs] == [0, 0, 0, 0], [r.stderr for r in runs]
    created = [
        name
        for r in runs
        for name in r.stdout.split("created partitions: ", 1)[1].split(";")[0].split(", ")
        if name.startswith("auth_events_p")
    ]
    assert sorted(created) == months(fresh_dsn, 0, 1, 2)
    assert drift_lines(fresh_dsn)[0] == 0


def test_the_month_edge_routes_each_instant_to_its_own_month(fresh_dsn: str) -> None:
    """The last millisecond of a month lands in that month's partition, the first of the next in
    the next one's, whatever month it is (CI also runs this on 2028-02-29, a leap day)."""
    rows = query(
        fresh_dsn,
        """
        WITH edge AS (
            SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')
                   AT TIME ZONE 'UTC' AS at
        ), written AS (
            INSERT INTO auth_events (occurred_at, email, result, decided_by)
            SELECT at + d, 'edge@example.com', 'success', 'password'
            FROM edge, unnest(ARRAY[interval '-1 millisecond', interval '0']) AS d
            RETURNING tableoid::regclass::text AS part, occurred_at
        )
        SELECT part FROM written ORDER BY occurred_at
        """,
    )
    assert [r["part"] for r in rows] == months(fresh_dsn, 0, 1)


def test_findings_use_the_database_clock_not_the_callers() -> None:
    """Which month is current is computed from the timestamp the database returns, in UTC:
    23:30 on 29 February at UTC-5 is already March."""
    layout = partitions.split([])
    layout.parents["auth_events"] = partitions.Partitioned("auth_events", default="d")
    layout.parents["auth_events"].months[(2028, 3)] = "auth_events_p202803"
    layout.parents["auth_events"].months[(2028, 4)] = "auth_events_p202804"
    now = datetime.fromisoformat("2028-02-29T23:30:00-05:00")
    assert partitions.findings(layout, now, {}) == []
    february = datetime(2028, 2, 29, 23, 59, 59, 999000, tzinfo=UTC)
    texts = [f.text for f in partitions.findings(layout, february, {})]
    assert texts == [
        "missing auth_events_p202802 for the current month: its rows go to the default "
        "partition; `defeah-db maintain-events` creates it"
    ]
