"""Instagram access tokens encrypted at rest: AES-256-GCM under a rotatable key ring.

Why in the application: the embedded server has no pgcrypto, and a key sent to the database
would sit in its logs, ``pg_stat_statements`` and every backup next to the ciphertext.  So
PostgreSQL only ever sees the stored form, which describes itself::

    v1:<key id>:<base64 of nonce (12 bytes) | ciphertext | tag (16 bytes)>

The associated data is ``v1:<key id>:<user id>``: a value copied onto another user's row, or
relabelled with another key id, fails authentication instead of decrypting.

Keys come from ``DEFEAH_TOKEN_KEYS`` (``id:base64key,...``, 32-byte keys): the first encrypts,
all decrypt, so rotation is "prepend the new key, run ``defeah-db reencrypt``, drop the old".
In ``development``/``test`` without the variable a key is generated once into
``<data folder's parent>/token-keys`` (mode 0600; ``dev_key`` refuses a file or folder someone
else could have planted) so a checkout works out of the box; on
``staging``/``production`` whatever reads or writes a token refuses to start without it
(``settings_cipher``), while the DBA's verbs never need it.

Only a well-formed stored value (``STORED_FORM``, exactly) is a token.  Anything else in the
column -- a token written before this module existed or by ``seeds/``, or a value planted by
whoever can write to the table (``attacker-token``, ``V1:k1:...``, `` v1:...``) -- raises
``TokenUnreadable``: reading plaintext "as is" would let a writer of the column choose the
token the application sends to Instagram, and ``reencrypt`` would seal it.  Legacy plaintext
(``legacy_plaintext``) becomes a token only through ``defeah-db reencrypt --adopt-plaintext``,
an explicit one-off.
Key bytes live only in ``AESGCM`` objects and a private attribute; no repr, log line or error
of this module contains a key or a token.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Final
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dal.db import dev_secrets as dev_key
from dal.db.dev_secrets import dev_key_path
from dal.db.settings import Settings
from dal.errors import ConfigError, TokenUnreadable

VERSION: Final = "v1"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
KEY_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
ENV: Final = "DEFEAH_TOKEN_KEYS"
# v1:<key id>:<canonical padded base64>, nothing before or after (no whitespace, no newline).
BASE64_BODY: Final = r"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
STORED_FORM: Final = re.compile(rf"v1:([A-Za-z0-9_-]{{1,32}}):({BASE64_BODY})")
# What a token written before encryption can look like: Instagram's are opaque URL-safe
# strings.  No colon and no whitespace, so nothing shaped like a stored value (``V1:``, `` v1:``,
# ``v2:``) -- a damaged or planted one -- is ever adopted as a token.
LEGACY_TOKEN: Final = re.compile(r"[A-Za-z0-9._~+/=|-]{1,2048}")


def legacy_plaintext(stored: str) -> bool:
    """Whether ``stored`` may be adopted as a pre-encryption token (``reencrypt
    --adopt-plaintext``): not a stored form, and shaped like an Instagram token."""
    return LEGACY_TOKEN.fullmatch(stored) is not None


@dataclass(frozen=True)
class TokenKey:
    """One key of the ring; its repr shows the id only."""

    id: str
    cipher: AESGCM = field(repr=False, compare=False)


def parse_keys(text: str) -> tuple[TokenKey, ...]:
    """The ring in ``text`` (``id:base64key,...``); ``ValueError`` naming the bad entry's
    position and id, never its key material."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if not entries:
        raise ValueError("lists no key; expected id:base64key[,id:base64key...]")
    ring: list[TokenKey] = []
    for position, entry in enumerate(entries, 1):
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or KEY_ID.fullmatch(key_id) is None:
            raise ValueError(f"entry {position} is not id:base64key (id: 1-32 of A-Z a-z 0-9 _ -)")
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {key_id!r} is not valid base64") from None
        if len(raw) != KEY_BYTES:
            raise ValueError(f"key {key_id!r} must decode to {KEY_BYTES} bytes, got {len(raw)}")
        if any(key.id == key_id for key in ring):
            raise ValueError(f"key id {key_id!r} appears twice")
        ring.append(TokenKey(key_id, AESGCM(raw)))
    return tuple(ring)


def new_key_entry(key_id: str) -> str:
    """A fresh ``id:base64key`` entry (for the dev key file and for operators rotating)."""
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


def _aad(key_id: str, user_id: UUID) -> bytes:
    return f"{VERSION}:{key_id}:{user_id}".encode()


class TokenCipher:
    """Encrypts under the ring's first key and decrypts under any of them."""

    def __init__(self, keys: tuple[TokenKey, ...]) -> None:
        if not keys:
            raise ValueError("a token cipher needs at least one key")
        self._keys = {key.id: key for key in keys}
        self.active = keys[0].id
        self._active = keys[0].cipher

    def __repr__(self) -> str:
        return f"<TokenCipher active={self.active!r} keys={list(self._keys)!r}>"

    @property
    def current_prefix(self) -> str:
        """How every value written under the active key starts."""
        return f"{VERSION}:{self.active}:"

    @property
    def current_form(self) -> str:
        """A PostgreSQL regular expression (``~``) matching exactly the well-formed
        values under the active key: ``reencrypt`` skips those, and only those (a value merely
        starting like one, ``v1:<active>:junk`` or with a trailing newline, is not done)."""
        return f"^{self.current_prefix}{BASE64_BODY}$"  # a key id has no regex metacharacter

    def encrypt(self, user_id: UUID, token: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._active.encrypt(nonce, token.encode(), _aad(self.active, user_id))
        return self.current_prefix + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, user_id: UUID, stored: str) -> str:
        """The token in ``stored``.

        ``TokenUnreadable`` (naming the user only) when ``stored`` is not exactly a stored form
        (plaintext included), the key id is unknown, the value is damaged, or it was sealed for
        another user.
        """
        form = STORED_FORM.fullmatch(stored)
        if form is None:
            raise TokenUnreadable(
                user_id,
                "the value is not ciphertext (legacy plaintext is adopted only by "
                "`defeah-db reencrypt --adopt-plaintext`)",
            )
        key_id, body = form.group(1), form.group(2)
        key = self._keys.get(key_id)
        if key is None:
            raise TokenUnreadable(user_id, f"key {key_id!r} is not in {ENV}")
        try:
            raw = base64.b64decode(body, validate=True)
            plain = key.cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(key_id, user_id))
            return plain.decode()
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            raise TokenUnreadable(user_id, "the value does not authenticate") from None


def dev_key_text(path: Path) -> str:
    """The development ring at ``path`` (``dev_key``: checked, created with a fresh key)."""
    return dev_key.dev_key_text(path, lambda: new_key_entry("dev"))


def settings_cipher(settings: Settings, purpose: str) -> TokenCipher:
    """The cipher of ``settings`` for ``purpose`` (a verb, or "reading or writing an Instagram
    token"): refused on staging/production without ``DEFEAH_TOKEN_KEYS``, and when the ring is
    malformed.  The verbs that use tokens call it at start, so a bad ring stops them at once."""
    settings.require(purpose, "token_keys")
    secret = settings.token_keys
    return cipher_for(None if secret is None else secret.get_secret_value(), settings.data_dir)


@cache
def _cipher(keys_text: str) -> TokenCipher:
    return TokenCipher(parse_keys(keys_text))


def cipher_for(keys_text: str | None, data_dir: Path) -> TokenCipher:
    """The process's cipher: from ``DEFEAH_TOKEN_KEYS`` when set, else the development key;
    ``ConfigError`` (one line naming the variable, never a key) when the ring is malformed."""
    text = keys_text if keys_text is not None else dev_key_text(dev_key_path(data_dir))
    try:
        return _cipher(text)
    except ValueError as exc:
        source = ENV if keys_text is not None else str(dev_key_path(data_dir))
        raise ConfigError(f"{source}: {exc}") from None
