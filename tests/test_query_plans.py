"""The plans of the DAL's statements on a realistically filled table: every lookup is served by
an index, and migration 0003's partial index is what serves expiring_instagram_tokens."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from dal.queries import load

ROWS = 20_000

FILL = f"""
INSERT INTO users (email, hashed_password, created_at, is_active, is_verified,
                   instagram_user_id, instagram_access_token, token_expires_at)
SELECT 'user' || g || '@example.com', '$2b$04$' || repeat('x', 53),
       now() - g * interval '1 minute', g % 10 <> 0, g % 3 = 0,
       CASE WHEN g % 20 = 0 THEN 'ig' || g END,
       CASE WHEN g % 20 = 0 THEN 'token' || g END,
       CASE WHEN g % 20 = 0 THEN now() + (g % 2000) * interval '1 hour' END
FROM generate_series(1, {ROWS}) AS g
"""


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def q(name: str, file: str = "users", **values: object) -> tuple[str, list[object]]:
    """A statement of dal/queries/<file>.sql with its arguments in ``$n`` order."""
    query = load(file)[name]
    return query.sql, query.args(values)


async def _plan(
    conn: asyncpg.Connection[Any], statement: tuple[str, list[object]]
) -> list[dict[str, Any]]:
    sql, args = statement
    raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    return list(_nodes(json.loads(raw)[0]["Plan"]))


@pytest.fixture
async def filled(fresh_dsn: str) -> Any:
    conn = await asyncpg.connect(fresh_dsn, server_settings={"timezone": "UTC"})
    try:
        await conn.execute(FILL)
        await conn.execute("ANALYZE users")
        yield conn
    finally:
        await conn.close()


def _indexes(nodes: list[dict[str, Any]]) -> set[str]:
    return {n["Index Name"] for n in nodes if "Index Name" in n}


def _seq_scans(nodes: list[dict[str, Any]]) -> list[str]:
    return [n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"]


async def test_point_lookups_use_their_indexes(filled: asyncpg.Connection[Any]) -> None:
    some_id = await filled.fetchval("SELECT id FROM users OFFSET 100 LIMIT 1")
    assert _indexes(await _plan(filled, q("get_user", id=some_id))) == {"users_pkey"}
    by_email = await _plan(filled, q("get_user_by_email", email="USER77@example.com"))
    assert _indexes(by_email) == {"users_email_lower_key"}
    state = q(
        "sign_in_state",
        file="signin",
        email="user5@example.com",
        scopes=["account", "network"],
        emails=["user5@example.com", "user5@example.com"],
        networks=["", "203.0.113.0/24"],
        limits=[50, 5],
        known=False,
        client_ip="203.0.113.7",
        user_agent=None,
    )
    sign_in = await _plan(filled, state)
    assert "users_email_lower_key" in _indexes(sign_in)
    assert _seq_scans(sign_in) == []  # the budget rows by primary key, the user by email
    known = q("known_address", file="signin", email="user5@example.com", address="203.0.113.7/32")
    assert {"users_email_lower_key", "sign_in_known_addresses_pkey"} <= _indexes(
        await _plan(filled, known)
    )
    failure = await _plan(
        filled, q("record_login_failure", id=some_id, threshold=5, window=timedelta(minutes=15))
    )
    assert _indexes(failure) == {"users_pkey"} and not _seq_scans(failure)


async def test_keyset_pages_scan_only_what_they_return(filled: asyncpg.Connection[Any]) -> None:
    first = await _plan(filled, q("list_users", active=True, verified=None, limit=51))
    assert _indexes(first) == {"idx_users_created_at"} and not _seq_scans(first)
    deep = datetime.now(UTC) - timedelta(minutes=ROWS - 500)  # near the last page
    after = await _plan(
        filled,
        q(
            "list_users_after",
            active=None,
            verified=None,
            limit=51,
            after_created_at=deep,
            after_id=uuid.uuid4(),
        ),
    )
    scan = next(n for n in after if n.get("Index Name") == "idx_users_created_at")
    assert scan["Scan Direction"] == "Backward"
    assert "created_at <=" in scan["Index Cond"]  # starts at the cursor, no OFFSET-like skip
    assert not _seq_scans(after)


async def test_expiring_tokens_use_the_0006_partial_index(filled: asyncpg.Connection[Any]) -> None:
    nodes = await _plan(
        filled, q("expiring_instagram_tokens", "instagram", within=timedelta(days=7), limit=1000)
    )
    assert _indexes(nodes) == {"users_token_expiry_idx"} and not _seq_scans(nodes)
    # Without it (as before 0003) the same statement reads the whole table.
    undo = filled.transaction()
    await undo.start()
    try:
        await filled.execute("DROP INDEX users_token_expiry_idx")
        before = await _plan(
            filled,
            q("expiring_instagram_tokens", "instagram", within=timedelta(days=7), limit=1000),
        )
        assert _seq_scans(before) == ["users"]
    finally:
        await undo.rollback()


CLAIM_ROWS = 1_000_000

CLAIM_FILL = f"""
INSERT INTO users (email, hashed_password, created_at, instagram_user_id,
                   instagram_access_token, token_expires_at, token_issued_at, needs_reauth)
SELECT 'claim' || g || '@example.com', 'x', now() - g * interval '1 second',
       CASE WHEN g % 4 = 0 THEN 'ig' || g END,
       CASE WHEN g % 4 = 0 THEN 'v1:k:' || g END,
       CASE WHEN g % 4 = 0 THEN now() + (g % 1440) * interval '1 hour' END,
       CASE WHEN g % 4 = 0 THEN now() - interval '2 days' END,
       g % 400 = 0
FROM generate_series(1, {CLAIM_ROWS}) AS g
"""


async def test_token_claim_is_an_index_scan_at_a_million_users(fresh_dsn: str) -> None:
    """claim_tokens_due at 1,000,000 users (250,000 connected, expiries over 60 days): the
    window is read from users_token_expiry_idx in order -- no sequential scan, no sort."""
    conn = await asyncpg.connect(fresh_dsn, server_settings={"timezone": "UTC"})
    try:
        await conn.execute(CLAIM_FILL)
        await conn.execute("ANALYZE users")
        claim = q(
            "claim_tokens_due",
            "instagram",
            within=timedelta(days=7),
            min_age=timedelta(hours=24),
            limit=100,
            lease=timedelta(minutes=10),
        )
        nodes = await _plan(conn, claim)
        assert "users_token_expiry_idx" in _indexes(nodes) and not _seq_scans(nodes)
        assert not [n for n in nodes if n["Node Type"] == "Sort"]
    finally:
        await conn.close()
