"""Models of an Instagram connection: what connects one (``InstagramConnection``), what the
Graph API returned (``RefreshedToken``), what a refresh worker leased (``DueToken``), and what
Meta's callbacks are about and did (``InstagramAccount``, ``Deauthorization``,
``DeletionRequest``).
Tokens are ``SecretStr`` and excluded from ``repr``/``model_dump``/JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
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


class InstagramAccount(UserInput):
    """The Instagram user a Meta callback is about (its app-scoped id), checked by the column's
    rules before any statement runs."""

    instagram_user_id: InstagramUserId


class Deauthorization(BaseModel):
    """What a deauthorize callback did (``InstagramCallbacks.deauthorize``)."""

    model_config = ConfigDict(frozen=True)

    # disconnected: an account held that Instagram user and lost it; not_connected: none did
    outcome: Literal["disconnected", "not_connected"]
    # True when this signed request had been recorded before: nothing was done this time
    repeated: bool


class DeletionRequest(BaseModel):
    """A data deletion request as its status page shows it: nothing about the person."""

    model_config = ConfigDict(frozen=True)

    confirmation_code: str
    # completed: an account held that Instagram user and its Instagram data were erased;
    # nothing_held: no account did, so there was nothing to erase
    status: Literal["completed", "nothing_held"]
    received_at: datetime
    repeated: bool = False
