"""Models of an Instagram connection: what connects one (``InstagramConnection``), what the
Graph API returned (``RefreshedToken``) and what a refresh worker leased (``DueToken``).
Tokens are ``SecretStr`` and excluded from ``repr``/``model_dump``/JSON."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from dal.inputs import AccessToken, InstagramUserId, InstagramUsername, TokenExpiry, UserInput


class InstagramConnection(UserInput):
    """An Instagram account to attach to a user (``UsersRepository.connect_instagram``)."""

    instagram_user_id: InstagramUserId
    access_token: AccessToken = Field(repr=False, exclude=True)
    instagram_username: InstagramUsername | None = None
    token_expires_at: TokenExpiry | None = None


class RefreshedToken(UserInput):
    """A token the Graph API returned (``UsersRepository.record_token_refreshed``): the same
    rules as a connected one, and an expiry is required."""

    access_token: AccessToken = Field(repr=False, exclude=True)
    token_expires_at: TokenExpiry


class DueToken(BaseModel):
    """A token leased by ``claim_tokens_due``: refresh it, then record the outcome."""

    model_config = ConfigDict(frozen=True)

    user_id: UUID
    token: SecretStr = Field(repr=False, exclude=True)
    expires_at: datetime
    # When this claim's lease ends; passed back to the record methods it fences them: once
    # the lease ran out and another worker claimed the row, this worker's writes match nothing.
    lease_until: datetime


class TokenRefreshFailure(BaseModel):
    """Outcome of ``record_token_refresh_failed``."""

    model_config = ConfigDict(frozen=True)

    failures: int
    needs_reauth: bool
