"""Readiness knows the schema: behind the code's REQUIRED_HEAD is 503, ahead is 200 with warn."""

from __future__ import annotations

from pathlib import Path

from dal.migrations import runner as migrations
from dal.migrations import schema_state
from tests.factories import make_settings
from tests.pg import query
from tests.test_web_routes import get_json, serving
from web.health import GENERIC_SCHEMA, GENERIC_SCHEMA_WARN

ROOT = Path(__file__).resolve().parent.parent


def test_required_head_is_the_newest_migration() -> None:
    ids = sorted(
        f.stem for f in (ROOT / "sql").glob("*.sql") if not f.name.endswith(".rollback.sql")
    )
    assert ids[-1] == schema_state.REQUIRED_HEAD


async def test_equal_head_is_ready_and_passes(fresh_dsn: str) -> None:
    async with serving(make_settings(fresh_dsn, pool_max_size=4)) as client:
        status, _, ready = await get_json(client, "/readyz")
        _, _, detailed = await get_json(client, "/api/v1/health/detailed")
    assert status == 200 and ready["status"] == "pass"
    schema = detailed["checks"]["postgresql:schema"][0]
    assert schema["status"] == "pass"
    assert schema["observedValue"]["head"] == schema_state.REQUIRED_HEAD
    assert schema["observedValue"]["drift"] == 0


async def test_behind_is_not_ready(fresh_dsn: str) -> None:
    migrations.rollback(fresh_dsn)
    async with serving(make_settings(fresh_dsn, pool_max_size=4)) as client:
        status, _, ready = await get_json(client, "/readyz")
        _, _, detailed = await get_json(client, "/api/v1/health/detailed")
    assert status == 503
    check = ready["checks"]["postgresql:schema"][0]
    assert check["status"] == "fail"
    assert check["output"] == GENERIC_SCHEMA  # an open route names no migration
    schema = detailed["checks"]["postgresql:schema"][0]
    assert f"is behind {schema_state.REQUIRED_HEAD}" in schema["output"]


async def test_ahead_stays_ready_and_detailed_warns(fresh_dsn: str) -> None:
    query(
        fresh_dsn,
        "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc) "
        "VALUES (md5('9999_from_the_next_release'), '9999_from_the_next_release', now())",
    )
    async with serving(make_settings(fresh_dsn, pool_max_size=4)) as client:
        status, _, ready = await get_json(client, "/readyz")
        _, _, detailed = await get_json(client, "/api/v1/health/detailed")
    assert status == 200
    # The open route gives the verdict only: no migration id, count or reason.
    open_check = ready["checks"]["postgresql:schema"][0]
    assert open_check["observedValue"] == {"behind": False}
    assert open_check["output"] == GENERIC_SCHEMA_WARN and "9999" not in str(ready)
    schema = detailed["checks"]["postgresql:schema"][0]
    assert schema["status"] == "warn" and detailed["status"] == "warn"
    assert schema["observedValue"]["ahead"] == ["9999_from_the_next_release"]


async def test_drift_and_changed_checksums_warn(fresh_dsn: str) -> None:
    migrations.apply(fresh_dsn)  # records checksums
    query(fresh_dsn, "CREATE INDEX users_hotfix_idx ON users (full_name)")
    query(
        fresh_dsn,
        "UPDATE defeah_migration_checksum SET sha256 = 'x' WHERE migration_id = '0001_users'",
    )
    async with serving(make_settings(fresh_dsn, pool_max_size=4)) as client:
        status, _, ready = await get_json(client, "/readyz")
        _, _, detailed = await get_json(client, "/api/v1/health/detailed")
    assert status == 200
    # The open route gives the verdict only: no migration id, count or reason.
    open_check = ready["checks"]["postgresql:schema"][0]
    assert open_check["observedValue"] == {"behind": False}
    assert open_check["output"] == GENERIC_SCHEMA_WARN and "9999" not in str(ready)
    schema = detailed["checks"]["postgresql:schema"][0]
    assert schema["status"] == "warn"
    assert schema["observedValue"]["checksums"] == "changed"
    assert schema["observedValue"]["drift"] == 1
    assert "unexpected index users_hotfix_idx" in schema["output"]
    assert "checksum: 0001_users.sql" in schema["output"]


async def test_a_missing_month_warns_with_the_command_that_fixes_it(fresh_dsn: str) -> None:
    month = query(
        fresh_dsn, "SELECT 'auth_events_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMM') AS m"
    )[0]["m"]
    query(fresh_dsn, f"DROP TABLE {month}")
    async with serving(make_settings(fresh_dsn, pool_max_size=4)) as client:
        status, _, ready = await get_json(client, "/readyz")
        _, _, detailed = await get_json(client, "/api/v1/health/detailed")
    assert status == 200 and ready["status"] == "warn"
    assert ready["checks"]["postgresql:schema"][0]["output"] == GENERIC_SCHEMA_WARN
    schema = detailed["checks"]["postgresql:schema"][0]
    assert schema["status"] == "warn" and schema["observedValue"]["drift"] == 0
    assert schema["observedValue"]["partitions"] == [
        f"missing {month} for the current month: its rows go to the default partition; "
        "`defeah-db maintain-events` creates it"
    ]
    assert "`defeah-db maintain-events`" in schema["output"]
