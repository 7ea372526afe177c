"""Property tests: the pydantic input rules and the database's CHECKs and column types agree.

For generated emails and full names (valid ones, near misses around each rule, and arbitrary
text), the same value is given to ``NewUser`` and -- bypassing pydantic with
``model_construct`` -- to the repository's INSERT, inside a transaction that is rolled back.

* whatever pydantic accepts, the database accepts;
* for emails the two agree exactly;
* for names the database accepts one thing pydantic refuses: a value longer than 255
  characters whose excess is spaces, which PostgreSQL silently truncates to fit the column.
  Refusing it is deliberate (no silent data change);
* every refusal, from either layer, is an ``InvalidUserData`` naming the field.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from dal import Database, InstagramConnection, NewUser
from dal.errors import InvalidUserData
from dal.instagram.repository import InstagramRepository
from dal.users.repository import UsersRepository
from tests.factories import make_settings

LOCAL = st.text(alphabet="aZ09._%+-!#'é K ", max_size=8)
DOMAIN = st.text(alphabet="aZ9-._é", max_size=8)
TLD = st.text(alphabet="aZ1K\u017fé", max_size=4)
AT = st.sampled_from(["@", "@", "@", "@@", "", "\uff20"])
TAIL = st.sampled_from(["", "", "", "\n", " ", ".", "\x00"])

NEAR_MISS_EMAILS = st.builds(
    lambda local, at, domain, tld, tail: f"{local}{at}{domain}.{tld}{tail}",
    LOCAL,
    AT,
    DOMAIN,
    TLD,
    TAIL,
)
LONG_EMAILS = st.integers(min_value=240, max_value=262).map(lambda n: "a" * (n - 7) + "@ex.com")
EMAILS = st.one_of(NEAR_MISS_EMAILS, LONG_EMAILS, st.emails(), st.text(max_size=12))

NAMES = st.one_of(
    st.none(),
    st.text(max_size=4),
    st.text(min_size=250, max_size=260),
    st.integers(min_value=250, max_value=262).map(lambda n: "N" * min(n, 255) + " " * (n - 255)),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=3),
)

RELAXED = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def pydantic_verdict(**fields: Any) -> InvalidUserData | None:
    try:
        NewUser(**{"email": "ok@example.com", "password": "pw-long-enough", **fields})
    except InvalidUserData as exc:
        return exc
    return None


async def database_verdict(db: Database, **fields: Any) -> InvalidUserData | None:
    values: dict[str, Any] = {
        "email": "ok@example.com",
        "password": SecretStr("pw-long-enough"),
        "full_name": None,
        "is_active": True,
        "is_verified": False,
        "timezone": "UTC",
        "language": "en",
        **fields,
    }
    unchecked = NewUser.model_construct(**values)
    async with db.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await UsersRepository(db).create(unchecked, conn=conn)
        except InvalidUserData as exc:  # any other error fails the test
            return exc
        finally:
            await tx.rollback()
    return None


@RELAXED
@given(email=EMAILS)
@example(email="ada@example.\u212aa")  # Kelvin sign: a letter only to Unicode case folding
@example(email="ada@example.com\n")  # $ before a trailing newline, in Python's regex only
@example(email="a@b.c")
@example(email="a@b.co")
async def test_email_rules_agree(db: Database, email: str) -> None:
    ours = pydantic_verdict(email=email)
    theirs = await database_verdict(db, email=email)
    assert (ours is None) == (theirs is None), (email, ours, theirs)
    for refusal in (ours, theirs):
        if refusal is not None:
            assert refusal.field == "email" and refusal.rule


@RELAXED
@given(name=NAMES)
@example(name="N" * 255 + "   ")
@example(name="A\x00")
async def test_full_name_rules_agree(db: Database, name: str | None) -> None:
    ours = pydantic_verdict(full_name=name)
    theirs = await database_verdict(db, full_name=name)
    if ours is None:
        assert theirs is None, (name, theirs)
    elif theirs is None:
        assert name is not None and len(name) > 255 and name[255:].strip(" ") == "", name
    for refusal in (ours, theirs):
        if refusal is not None:
            assert refusal.field == "full_name" and refusal.rule


async def test_access_token_cap_keeps_the_encrypted_form_inside_the_check(
    clean_dsn: str,
) -> None:
    """InstagramConnection caps the plaintext at 2048 bytes; the table's CHECK
    instagram_access_token_max_length (0004) caps the stored, encrypted form at 4096
    characters.  The largest accepted token (2048 bytes, ASCII or not, under a 32-character key
    id) is stored; a bypassed model with a longer token is still refused by the CHECK, which
    names the token field -- and never quotes the value."""
    longest_id = "k" * 32 + ":" + base64.b64encode(b"k" * 32).decode()
    async with Database(make_settings(clean_dsn, token_keys=longest_id)) as db:
        await _largest_tokens_fit(UsersRepository(db), InstagramRepository(db))


async def _largest_tokens_fit(users: UsersRepository, instagram: InstagramRepository) -> None:
    user = await users.create(NewUser(email="ok@example.com", password="pw-long-enough"))  # type: ignore[arg-type]
    for token in ("t" * 2048, "é" * 1024, "\U0001f600" * 512):
        link = InstagramConnection(instagram_user_id="1", access_token=token)  # type: ignore[arg-type]
        await instagram.connect(user.id, link)
        read = await instagram.token(user.id)
        assert read is not None and read.get_secret_value() == token
    with pytest.raises(InvalidUserData) as ours:
        InstagramConnection(instagram_user_id="1", access_token="t" * 2049)  # type: ignore[arg-type]
    assert (ours.value.field, "2048 bytes" in ours.value.rule) == ("access_token", True)
    unchecked = InstagramConnection.model_construct(
        instagram_user_id="1",
        access_token=SecretStr("t" * 4000),
        instagram_username=None,
        token_expires_at=None,
    )
    with pytest.raises(InvalidUserData) as theirs:
        await instagram.connect(user.id, unchecked)
    assert theirs.value.field == "instagram_access_token"
    assert "instagram_access_token_max_length" in theirs.value.rule
    assert "t" * 100 not in str(theirs.value)
