"""Auth: refresh tokens (stored hashed, in families), the failed-login log, and the request log
and locks of the database rate limiter."""

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from storeroom.core.db import NEVER_REUSE_IDS, Base
from storeroom.core.types import exact_string


class RefreshToken(Base):
    """One refresh token. Each login starts a family; each refresh marks its token used and adds
    the next one to the family, so presenting a used token reveals a copy and ends the family."""

    __tablename__ = "refresh_tokens"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The account's token key when this token was issued: a credential change draws a new
    # one, and every refresh token issued before it stops working.
    token_key: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class LoginFailure(Base):
    """A failed login (or one under way: an attempt is counted before its password is checked),
    kept for the length of the rate-limit window (the database limiter). `account` is the
    limiter's key for the account: `user:<id>`, or `email:<address>` for an unknown one."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_account_failed_at", "account", "failed_at"),
        Index("ix_login_failures_client_ip_failed_at", "client_ip", "failed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(exact_string(254))
    client_ip: Mapped[str] = mapped_column(String(45))
    failed_at: Mapped[datetime] = mapped_column(index=True)


RATE_LIMIT_KEY_LENGTH = 300


class RequestHit(Base):
    """One request counted against a rate limit (the database limiter): a request limited on
    several keys (the caller's address, the email it names) leaves one row per key."""

    __tablename__ = "request_hits"
    __table_args__ = (Index("ix_request_hits_key_hit_at", "key", "hit_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(exact_string(RATE_LIMIT_KEY_LENGTH))
    hit_at: Mapped[datetime] = mapped_column(index=True)


class RateLimitLock(Base):
    """One row per rate-limit key, locked (by an UPDATE) while an attempt is counted against
    that key: counting and recording then happen one attempt at a time, on every database, so
    a burst cannot slip past the limit between the count and the insert."""

    __tablename__ = "rate_limit_locks"

    key: Mapped[str] = mapped_column(exact_string(RATE_LIMIT_KEY_LENGTH), primary_key=True)
    locked_at: Mapped[datetime] = mapped_column(index=True)
