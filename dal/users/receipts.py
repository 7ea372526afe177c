"""Erasure receipts: proof that a user was erased, holding no personal data.

A receipt is the erasure's time and two keyed digests, HMAC-SHA256 of the user id and of the
normalized email under ``DEFEAH_ERASURE_PEPPER``.  Without the pepper nobody can tell whose
receipt it is (not even by hashing a list of known emails); with it, ``reapply-erasures``
recognises the erased users in a restored backup.  The pepper stays in the application: sent
to PostgreSQL it would sit in logs and ``pg_stat_statements`` beside the digests.

In ``development``/``test`` without the variable a pepper is generated once into
``<data folder's parent>/erasure-pepper`` (mode 0600), as the token key ring is; on
``staging``/``production`` the verbs that erase, reapply or export refuse to start without it.
Changing the pepper orphans every receipt made under the old one, so it is never rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final
from uuid import UUID

from dal.db.dev_secrets import dev_key_text
from dal.db.privacy_settings import MIN_ERASURE_PEPPER
from dal.db.settings import Settings
from dal.errors import ConfigError

DEV_PEPPER_FILE: Final = "erasure-pepper"
ENV: Final = "DEFEAH_ERASURE_PEPPER"


@dataclass(frozen=True)
class Pepper:
    """The HMAC key; its repr says nothing about it."""

    _key: bytes

    def __repr__(self) -> str:
        return "<Pepper>"

    def _digest(self, label: str, value: str) -> str:
        return hmac.new(self._key, f"{label}:{value}".encode(), hashlib.sha256).hexdigest()

    def user(self, user_id: UUID) -> str:
        return self._digest("user", str(user_id))

    def email(self, normalized_email: str) -> str:
        return self._digest("email", normalized_email)


@dataclass(frozen=True)
class Receipt:
    """One erasure as ``erasure_receipts`` holds it."""

    erased_at: datetime
    user_hmac: str
    email_hmac: str

    def to_line(self) -> str:
        return json.dumps(
            {
                "erased_at": self.erased_at.isoformat(),
                "user_hmac": self.user_hmac,
                "email_hmac": self.email_hmac,
            }
        )

    @classmethod
    def from_line(cls, line: str, where: str) -> Receipt:
        """A receipt of ``erasure-receipts`` output; ``ConfigError`` naming ``where`` if not."""
        try:
            data = json.loads(line)
            receipt = cls(
                datetime.fromisoformat(data["erased_at"]), data["user_hmac"], data["email_hmac"]
            )
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{where}: not a receipt line of `defeah-db erasure-receipts`"
            ) from None
        for digest in (receipt.user_hmac, receipt.email_hmac):
            if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
                raise ConfigError(f"{where}: a receipt digest is not 64 hex digits")
        if receipt.erased_at.tzinfo is None:
            raise ConfigError(f"{where}: erased_at has no time zone")
        return receipt


def dev_pepper_path(data_dir: Path) -> Path:
    return data_dir.parent / DEV_PEPPER_FILE


def _dev_pepper(path: Path) -> str:
    """The development pepper at ``path``, created (mode 0600) on first use, with the checks of
    every development secret file (``dal.db.dev_secrets``: no symbolic link, this user's, no
    group or other access; concurrent first uses agree)."""
    pepper = dev_key_text(path, lambda: secrets.token_urlsafe(48))
    if len(pepper) < MIN_ERASURE_PEPPER:
        raise ConfigError(
            f"{path}: the development erasure pepper is shorter than {MIN_ERASURE_PEPPER} "
            "characters; remove the file to have a new one made (no receipt made with it will "
            "match afterwards)"
        )
    return pepper


def settings_pepper(settings: Settings, purpose: str) -> Pepper:
    """The pepper for ``purpose`` (a verb): refused on staging/production without
    ``DEFEAH_ERASURE_PEPPER``; the development file otherwise."""
    settings.require(purpose, "erasure_pepper")
    secret = settings.erasure_pepper
    text = secret.get_secret_value() if secret is not None else None
    if text is None:
        text = _dev_pepper(dev_pepper_path(settings.data_dir))
    return Pepper(text.encode())
