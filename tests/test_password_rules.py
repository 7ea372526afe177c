"""Issue 20 item 8: the rules of a new password (NIST SP 800-63B 5.1.1.2) -- at least 8
characters and not on the shipped list of common passwords -- and the budget settings that
meet ASVS V2.2.1 (at most 100 failures an hour) and NIST 5.2.2 (at most 100 in a row)."""

from __future__ import annotations

from importlib.resources import files

import pytest

from dal import Database, NewUser, UserUpdate
from dal.db.settings import Settings
from dal.devdata.bulk import BULK_PASSWORD
from dal.errors import ConfigError, InvalidUserData
from dal.inputs import check_new_password, common_passwords
from dal.rules import PASSWORD_MIN_LENGTH, RULE_PASSWORD_COMMON, RULE_PASSWORD_MIN
from dal.users.repository import UsersRepository
from tests.factories import stored_hash
from tests.pg import query
from tests.test_seeds import PASSWORDS as SEED_PASSWORDS
from tests.test_signin import dsn


@pytest.mark.parametrize("password", ["pw", "x", "1234567", "seven c"])
def test_new_passwords_need_8_characters(password: str) -> None:
    with pytest.raises(InvalidUserData) as caught:
        NewUser(email="ada@example.com", password=password)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.rule) == ("password", RULE_PASSWORD_MIN)
    with pytest.raises(InvalidUserData):
        UserUpdate(password=password)  # type: ignore[arg-type]


def test_8_characters_count_code_points_not_bytes() -> None:
    assert PASSWORD_MIN_LENGTH == 8
    check_new_password("ééééééé-")  # 8 characters, 15 bytes
    with pytest.raises(ValueError, match="at least 8"):
        check_new_password("éééééé-")  # 7 characters, 13 bytes


COMMON = ["password", "Password1", " iloveyou ", "12345678", "Qwerty123"]


@pytest.mark.parametrize("password", COMMON)
def test_common_passwords_are_refused(password: str) -> None:
    with pytest.raises(InvalidUserData) as caught:
        NewUser(email="ada@example.com", password=password)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.rule) == ("password", RULE_PASSWORD_COMMON)
    with pytest.raises(InvalidUserData) as caught:
        UserUpdate(password=password)  # type: ignore[arg-type]
    assert caught.value.rule == RULE_PASSWORD_COMMON


def test_the_list_is_package_data_with_its_provenance() -> None:
    shipped = files("dal").joinpath("common-passwords.txt").read_text(encoding="utf-8")
    assert "zxcvbn" in shipped and "MIT License" in shipped  # where it comes from, its licence
    assert len(common_passwords()) == 10_000
    assert {"123456", "password", "qwerty", "iloveyou"} <= common_passwords()


def test_seed_and_bulk_passwords_meet_the_rules() -> None:
    for password in (*SEED_PASSWORDS.values(), BULK_PASSWORD):
        check_new_password(password)


async def test_a_shorter_password_set_before_the_rule_still_signs_in(db: Database) -> None:
    """Sign-in checks what it is given against the stored hash: only new passwords obey."""
    users = UsersRepository(db)
    user = await users.create(NewUser(email="old@example.com", password="long enough"))  # type: ignore[arg-type]
    old = await users.sign_in.passwords.hash("pw")  # an account made before the rule
    query(dsn(db.settings), "UPDATE users SET hashed_password = %s", (old,))
    assert await stored_hash(db, user.id) == old
    assert (await users.authenticate("old@example.com", "pw")).id == user.id


def test_default_budgets_allow_at_most_100_failures_an_hour() -> None:
    s = Settings.from_env({})
    assert s.failures_per_hour() == 100
    # The old defaults (50 per 900 s window, no known budget) allowed 250.
    old = s.replace(lockout_account_threshold=50, lockout_known_threshold=1)
    assert old.replace(lockout_account_window=900.0).failures_per_hour() == 255


def test_production_refuses_budgets_above_asvs() -> None:
    s = Settings.from_env({"DEFEAH_ENV": "production"})
    assert s.failures_per_hour() == 100
    with pytest.raises(ConfigError, match=r"allow 150 failed sign-ins per account per hour"):
        s.replace(lockout_account_window=1800.0)
    with pytest.raises(ConfigError, match=r"ASVS V2\.2\.1"):
        s.replace(lockout_account_threshold=41)
    Settings.from_env({}).replace(lockout_account_threshold=1000)  # elsewhere: tests, benches


def test_the_consecutive_limit_is_at_most_100_and_above_the_known_budget() -> None:
    s = Settings.from_env({})
    with pytest.raises(ConfigError, match="DEFEAH_LOCKOUT_CONSECUTIVE_LIMIT"):
        s.replace(lockout_consecutive_limit=101)
    with pytest.raises(ConfigError, match=r"DEFEAH_LOCKOUT_KNOWN_THRESHOLD \(100\) must be below"):
        s.replace(lockout_known_threshold=100)
