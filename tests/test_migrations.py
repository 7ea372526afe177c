"""The migrations reproduce the spec's schema exactly and behave as a DBA expects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dal.errors import MigrationError
from dal.migrations import runner as migrations
from tests.pg import PgServer, catalog, query

ROOT = Path(__file__).resolve().parent.parent
# A verbatim copy of shared/seed-schema.sql (the original spec), so a clone tests on its own;
# test_spec_copy_is_verbatim keeps it honest whenever shared/ sits beside the checkout.
SPEC_SCHEMA = ROOT / "tests" / "spec" / "seed-schema.sql"
SHARED_SPEC = ROOT.parent / "shared" / "seed-schema.sql"
# Migration ids in order, read from sql/ so the tests follow new migrations automatically.
IDS = sorted(
    f.name.removesuffix(".sql")
    for f in (ROOT / "sql").glob("*.sql")
    if not f.name.endswith(".rollback.sql")
)
HEAD = IDS[-1]
SPEC_TIMESTAMP_COLUMNS = {"last_login_at", "token_expires_at", "locked_until"}


@pytest.fixture(scope="module")
def spec_catalog(pg: PgServer) -> dict[str, list[tuple[object, ...]]]:
    """Catalog of the spec's seed-schema.sql applied verbatim to a scratch database."""
    name = pg.create_database("defeah_spec")
    try:
        query(pg.dsn(name), SPEC_SCHEMA.read_text())
        return catalog(pg.dsn(name))
    finally:
        pg.drop_database(name)


def test_spec_copy_is_verbatim() -> None:
    if not SHARED_SPEC.exists():
        pytest.skip(f"no shared/ beside this checkout ({SHARED_SPEC})")
    assert SPEC_SCHEMA.read_bytes() == SHARED_SPEC.read_bytes()


def test_0001_catalog_equals_spec(empty_dsn: str, spec_catalog: dict[str, list]) -> None:
    migrations.apply(empty_dsn)
    migrations.rollback(empty_dsn, to="0001_users")
    assert migrations.status(empty_dsn).applied == ("0001_users",)
    ours = catalog(empty_dsn)
    for key in ("columns", "constraints", "indexes", "triggers", "comments"):
        assert ours[key] == spec_catalog[key], key
    # pkey, 2 unique, 5 named checks (PostgreSQL 18 also lists NOT NULLs as contype 'n')
    assert len([c for c in spec_catalog["constraints"] if c[1] != "n"]) == 8
    assert len(spec_catalog["indexes"]) == 7


def test_head_keeps_every_spec_element(fresh_dsn: str, spec_catalog: dict[str, list]) -> None:
    head = catalog(fresh_dsn)
    head_columns = {c[0]: c for c in head["columns"]}
    for name, type_, notnull, default in spec_catalog["columns"]:
        col = head_columns[name]
        if name in SPEC_TIMESTAMP_COLUMNS:
            assert type_ == "timestamp without time zone"
            assert col[1] == "timestamp with time zone"
        else:
            assert col[1] == type_, name
        assert (col[2], col[3]) == (notnull, default), name
    assert set(spec_catalog["constraints"]) <= set(head["constraints"])
    assert set(spec_catalog["indexes"]) <= set(head["indexes"])
    head_indexes = dict(head["indexes"])
    assert "lower((email)::text)" in head_indexes["users_email_lower_key"]
    assert head_indexes["users_email_lower_key"].startswith("CREATE UNIQUE INDEX")


def test_head_comments_every_column(fresh_dsn: str) -> None:
    head = catalog(fresh_dsn)
    commented = {sub for sub, text in head["comments"] if text}
    assert 0 in commented  # the table itself
    assert commented >= set(range(1, len(head["columns"]) + 1))


def test_up_down_up_gives_identical_catalog(empty_dsn: str) -> None:
    migrations.apply(empty_dsn)
    first = catalog(empty_dsn)
    undone = migrations.rollback(empty_dsn, all_=True)
    assert undone == IDS[::-1]
    assert catalog(empty_dsn)["columns"] == []
    assert migrations.status(empty_dsn).applied == ()
    migrations.apply(empty_dsn)
    assert catalog(empty_dsn) == first


@pytest.mark.parametrize("index", range(1, len(IDS)))
def test_rolling_back_one_migration_restores_the_previous_catalog(
    index: int, pg: PgServer, tmp_path: Path
) -> None:
    """Applying up to migration N and rolling N back equals applying only up to N-1.

    For N = 0002 (the issue's "rollback of head") that is the 0001 catalog.
    """
    upto_n = _copy_sources(ROOT / "sql", tmp_path / "n", IDS[: index + 1])
    upto_prev = _copy_sources(ROOT / "sql", tmp_path / "prev", IDS[:index])
    rolled, plain = pg.create_database("defeah_rb"), pg.create_database("defeah_prev")
    try:
        migrations.apply(pg.dsn(rolled), sources=upto_n)
        assert migrations.rollback(pg.dsn(rolled), sources=upto_n) == [IDS[index]]
        migrations.apply(pg.dsn(plain), sources=upto_prev)
        assert catalog(pg.dsn(rolled)) == catalog(pg.dsn(plain))
    finally:
        pg.drop_database(rolled)
        pg.drop_database(plain)


def test_rollback_to_and_unknown_ids(empty_dsn: str) -> None:
    migrations.apply(empty_dsn)
    assert migrations.rollback(empty_dsn, to=HEAD) == []
    with pytest.raises(MigrationError, match="unknown migration id 'nope'"):
        migrations.rollback(empty_dsn, to="nope")
    assert migrations.rollback(empty_dsn, to="0001_users") == IDS[1:][::-1]
    with pytest.raises(MigrationError, match="is not applied"):
        migrations.rollback(empty_dsn, to="0002_users_hardening")


def test_data_survives_timestamp_conversion_round_trip(empty_dsn: str, tmp_path: Path) -> None:
    """Values written as UTC wall-clock time keep their instant through 0002 and its rollback."""
    sources = _copy_sources(ROOT / "sql", tmp_path, ["0001"])
    migrations.apply(empty_dsn, sources=sources)
    query(
        empty_dsn,
        "INSERT INTO users (email, hashed_password, locked_until) "
        "VALUES ('a@b.io', 'x', '2030-01-02 03:04:05')",
    )
    migrations.apply(empty_dsn)
    rows = query(empty_dsn, "SELECT locked_until AT TIME ZONE 'UTC' AS utc FROM users")
    assert [str(r["utc"]) for r in rows] == ["2030-01-02 03:04:05"]
    migrations.rollback(empty_dsn, to="0001_users")
    rows = query(empty_dsn, "SELECT locked_until FROM users")
    assert [str(r["locked_until"]) for r in rows] == ["2030-01-02 03:04:05"]


def _copy_sources(src: Path, tmp_root: Path, prefixes: list[str]) -> Path:
    """A throwaway migrations folder holding the migrations whose ids start with ``prefixes``."""
    dest = tmp_root / "sql"
    dest.mkdir(parents=True)
    for f in src.glob("*.sql"):
        if any(f.name.startswith(p) for p in prefixes):
            shutil.copy(f, dest / f.name)
    return dest


def test_failing_migration_leaves_nothing_applied(empty_dsn: str, tmp_path: Path) -> None:
    sources = _copy_sources(ROOT / "sql", tmp_path, IDS)
    (sources / "9999_broken.sql").write_text(
        f"-- depends: {HEAD}\n"
        "CREATE TABLE half_done (id int);\n"
        "ALTER TABLE users ADD COLUMN nickname text;\n"
        "SELECT no_such_function();\n"
    )
    (sources / "9999_broken.rollback.sql").write_text("DROP TABLE half_done;\n")
    with pytest.raises(MigrationError, match="no_such_function"):
        migrations.apply(empty_dsn, sources=sources)
    state = migrations.status(empty_dsn, sources=sources)
    assert state.pending == ("9999_broken",)
    assert query(empty_dsn, "SELECT to_regclass('public.half_done') AS t") == [{"t": None}]
    nickname = query(
        empty_dsn,
        "SELECT count(*) AS n FROM information_schema.columns "
        "WHERE table_name = 'users' AND column_name = 'nickname'",
    )
    assert nickname == [{"n": 0}]


def test_two_concurrent_appliers_apply_each_migration_once(empty_dsn: str) -> None:
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrations.apply(empty_dsn))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted(len(r) for r in results) == [0, len(IDS)]
    applied = query(
        empty_dsn, "SELECT migration_id, count(*) AS n FROM _yoyo_migration GROUP BY 1 ORDER BY 1"
    )
    assert applied == [{"migration_id": mid, "n": 1} for mid in IDS]


def _yoyo(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn}
    yoyo = Path(sys.executable).parent / "yoyo"
    return subprocess.run(
        [str(yoyo), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_yoyo_command_line_from_repo_root(empty_dsn: str) -> None:
    """A DBA's workflow: yoyo apply / list / rollback / rollback --all with only DATABASE_URL."""
    out = _yoyo(empty_dsn, "apply")
    assert out.returncode == 0, out.stderr
    listing = _yoyo(empty_dsn, "list")
    assert listing.returncode == 0, listing.stderr
    for mid in IDS:
        assert f"A         {mid}" in listing.stdout
    assert _yoyo(empty_dsn, "rollback").returncode == 0
    assert migrations.status(empty_dsn).pending == (HEAD,)
    assert _yoyo(empty_dsn, "rollback", "--all").returncode == 0
    assert migrations.status(empty_dsn).applied == ()
    assert _yoyo(empty_dsn, "apply").returncode == 0
    assert migrations.status(empty_dsn).pending == ()


def test_token_length_check_refuses_an_oversized_stored_token_and_undoes_itself(
    empty_dsn: str, tmp_path: Path
) -> None:
    """0004 runs outside a transaction (NOT VALID, then VALIDATE): when VALIDATE finds a token
    over 4096 characters, yoyo's undo of the ADD leaves no half-applied constraint behind."""
    migrations.apply(
        empty_dsn, sources=_copy_sources(ROOT / "sql", tmp_path, ["0001", "0002", "0003"])
    )
    before = catalog(empty_dsn)
    query(
        empty_dsn,
        "INSERT INTO users (email, hashed_password, instagram_user_id, instagram_access_token)"
        " VALUES ('a@b.io', 'x', '1', repeat('t', 4097))",
    )
    with pytest.raises(MigrationError, match="instagram_access_token_max_length"):
        migrations.apply(empty_dsn)
    later = tuple(m for m in IDS if m >= "0004")  # 0004 failed, so nothing after it ran
    assert migrations.status(empty_dsn).pending == later
    assert catalog(empty_dsn) == before

    query(empty_dsn, "UPDATE users SET instagram_access_token = NULL")
    assert migrations.apply(empty_dsn) == list(later)
    check = query(
        empty_dsn,
        "SELECT c.convalidated, obj_description(c.oid, 'pg_constraint') AS comment"
        " FROM pg_constraint c WHERE c.conname = 'instagram_access_token_max_length'",
    )
    assert len(check) == 1 and check[0]["convalidated"] is True
    assert "4096" in check[0]["comment"]
