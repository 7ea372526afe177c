"""The settings groups about personal data: Meta's Instagram callbacks (which erase on Meta's
request) and erasure receipts with the sign-in log's retention.  Split from
``dal.db.setting_groups`` only to keep modules short; ``Settings`` composes them the same way."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, Field, SecretStr

from dal.db.setting_types import Seconds, setting


def _app_secrets(value: object) -> object:
    """Comma-separated app secrets (the first is Meta's current one; the others are kept during
    a rotation); an empty entry is a typo, refused without quoting the value."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(raw, str):
        return value
    if not raw.strip():
        return None
    entries = [entry.strip() for entry in raw.split(",")]
    if any(not entry for entry in entries):
        raise ValueError("has an empty entry; give one or more secrets separated by commas")
    return SecretStr(",".join(entries))


def _public_url(value: object) -> object:
    """An absolute http(s) base URL without query or fragment; the trailing slash dropped."""
    if not isinstance(value, str):
        return value
    raw = value.strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s)://host[:port][/path] URL")
    if "@" in parts.netloc:  # never quoted back: it could carry a password
        raise ValueError("must not carry a user name or password")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment (the routes are appended to it)")
    return raw.rstrip("/")


class InstagramCallbackSettings(BaseModel):
    """Meta's deauthorize and data deletion callbacks (web/instagram_callbacks.py)."""

    instagram_app_secret: Annotated[SecretStr | None, BeforeValidator(_app_secrets)] = Field(
        None,
        validation_alias="DEFEAH_INSTAGRAM_APP_SECRET",
        description="The Meta app's secret, which signs the Instagram callbacks; comma-separated "
        "during a rotation (any one verifies). Set: the routes `/api/v1/instagram/deauthorize` "
        "and `/api/v1/instagram/data-deletion` are served (and `serve`/`up` need "
        "`DEFEAH_PUBLIC_URL`); unset: they are not.",
        repr=False,
    )
    public_url: Annotated[str | None, BeforeValidator(_public_url)] = Field(
        None,
        validation_alias="DEFEAH_PUBLIC_URL",
        description="The service's public base URL (`https://api.example.com`); the data "
        "deletion status URL given to Meta is built from it (`https://` on production).",
    )
    instagram_signed_request_max_age: Seconds = setting(
        3600.0,
        "DEFEAH_INSTAGRAM_SIGNED_REQUEST_MAX_AGE",
        "Seconds a signed request from Meta stays acceptable after its `issued_at` (older, or "
        "more than 5 minutes in the future: refused).",
        ge=1,
        le=604_800,
    )


# Characters of DEFEAH_ERASURE_PEPPER: with a guessable pepper anyone could match receipts.
MIN_ERASURE_PEPPER = 32


class PrivacySettings(BaseModel):
    """Erasure receipts and how long the sign-in event log is kept (docs/security.md)."""

    erasure_pepper: SecretStr | None = Field(
        None,
        validation_alias="DEFEAH_ERASURE_PEPPER",
        description="Key of the HMACs in erasure receipts (at least "
        f"{MIN_ERASURE_PEPPER} characters; never change it, or old receipts match nobody). "
        "Unset: generated once into `.defeah/erasure-pepper` (mode 0600) on development/test; "
        "required on staging/production by `erase-user`, `reapply-erasures`, `export-user`.",
        min_length=MIN_ERASURE_PEPPER,
        repr=False,
    )
    auth_events_retention_days: int = setting(
        90,
        "DEFEAH_AUTH_EVENTS_RETENTION_DAYS",
        "Days sign-in events are kept: `maintain-events` drops the monthly partitions wholly "
        "older; readiness warns when one is overdue.",
        ge=1,
        le=3650,
    )
