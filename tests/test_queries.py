"""The query files: every statement named, commented, and turned into asyncpg's ``$n`` form."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from dal import User
from dal.queries import QUERIES_DIR, load


def test_a_named_parameter_becomes_one_positional_parameter(tmp_path: Path) -> None:
    (tmp_path / "things.sql").write_text(
        "-- name: find_things\n"
        "-- Things by flag, after a cursor.\n"
        "SELECT id FROM things\n"
        "WHERE (:flag::boolean IS NULL OR flag = :flag) AND id > :after::uuid\n"
        "LIMIT :limit;\n",
        encoding="utf-8",
    )
    query = load("things", tmp_path)["find_things"]
    assert query.params == ("flag", "after", "limit")
    assert query.sql == (
        "SELECT id FROM things\n"
        "WHERE ($1::boolean IS NULL OR flag = $1) AND id > $2::uuid\n"
        "LIMIT $3"
    )
    assert query.doc == "Things by flag, after a cursor."
    assert query.args({"limit": 5, "after": "a", "flag": None}) == [None, "a", 5]
    assert query.labelled([None, "a", 5]) == {"flag": None, "after": "a", "limit": 5}


def test_a_string_literal_is_not_a_parameter(tmp_path: Path) -> None:
    (tmp_path / "lit.sql").write_text(
        "-- name: literal\n-- A literal colon.\nSELECT ':not_a_param', :real\n", encoding="utf-8"
    )
    query = load("lit", tmp_path)["literal"]
    assert query.params == ("real",)
    assert query.sql == "SELECT ':not_a_param', $1"


@pytest.mark.parametrize("path", sorted(QUERIES_DIR.glob("*.sql")), ids=lambda p: p.name)
def test_every_shipped_statement_is_commented(path: Path) -> None:
    queries = load(path.stem)
    assert queries, f"{path.name} holds no named statement"
    for query in queries.values():
        assert query.doc, f"{path.name}: {query.name} has no comment saying what it is for"
        assert ":" not in query.sql.replace("::", ""), f"{query.name}: unconverted :name"


def test_pyformat_names_each_parameter_and_keeps_literal_percent(tmp_path: Path) -> None:
    (tmp_path / "pf.sql").write_text(
        "-- name: pf\n-- psycopg2 form.\nSELECT :a, 'x%' LIKE 'x%', :b, :a\n", encoding="utf-8"
    )
    query = load("pf", tmp_path)["pf"]
    assert query.pyformat == "SELECT %(a)s, 'x%%' LIKE 'x%%', %(b)s, %(a)s"


async def test_every_statement_that_returns_a_user_returns_exactly_the_user_fields(
    fresh_dsn: str,
) -> None:
    """The users column list is written out in many statements; any that returns a user row
    (its result has ``id`` and ``email``) must return exactly the ``User`` fields, no secret
    among them.  Checked with the server's own description of each prepared statement."""
    fields = set(User.model_fields)
    conn = await asyncpg.connect(fresh_dsn)
    checked = []
    try:
        for file in ("users", "instagram", "signin"):
            for name, query in load(file).items():
                if "{" in query.sql:  # formatted entries (identifiers) return no user
                    continue
                statement = await conn.prepare(query.sql)
                columns = {a.name for a in statement.get_attributes()}
                if {"id", "email"} <= columns:
                    assert columns == fields, (file, name, sorted(columns ^ fields))
                    checked.append(f"{file}.{name}")
    finally:
        await conn.close()
    assert len(checked) >= 10, checked
    assert {"instagram.connect_instagram", "signin.record_success", "users.get_user"} <= set(
        checked
    )


def _assigned_columns(sql: str) -> set[str]:
    """The columns an ``UPDATE users SET ... WHERE`` statement assigns."""
    match = re.search(r"UPDATE users SET(.*?)WHERE", sql, re.DOTALL)
    assert match, sql
    return set(re.findall(r"(\w+)\s*=", match[1]))


async def test_disconnect_and_metas_callbacks_clear_the_same_instagram_columns(
    fresh_dsn: str,
) -> None:
    """Disconnecting by account id (``disconnect_instagram``) and by Instagram id (Meta's
    deauthorize and data deletion, ``clear_instagram_account``) are two statements: a column
    added for Instagram later must be cleared by both, or one path would keep it."""
    by_account = _assigned_columns(load("instagram")["disconnect_instagram"].sql)
    by_instagram_id = _assigned_columns(load("instagram_callbacks")["clear_instagram_account"].sql)
    assert by_account == by_instagram_id
    conn = await asyncpg.connect(fresh_dsn)
    try:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'users'"
        )
    finally:
        await conn.close()
    held = {
        row["column_name"]
        for row in columns
        if row["column_name"].startswith(("instagram_", "token_"))
        or row["column_name"] in {"needs_reauth", "refresh_claimed_until"}
    }
    assert held == by_account, sorted(held ^ by_account)
