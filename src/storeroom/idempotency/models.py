"""Idempotency: the keys callers sent with their creates, and the first response to each."""

from datetime import datetime

from sqlalchemy import ForeignKey, Index, SmallInteger, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from storeroom.core.db import Base

MAX_KEY_LENGTH = 255

# Keys are printable ASCII and compare byte for byte: MariaDB's default collation would call
# "Order-1" and "order-1" the same key.
KeyString = String(MAX_KEY_LENGTH).with_variant(
    mysql.VARCHAR(MAX_KEY_LENGTH, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
)
# The body as base64 text, not a binary column: aiomysql cannot bind bytes with PyMySQL 1.2
# (it calls a helper PyMySQL no longer has). MEDIUMTEXT: MariaDB's TEXT stops at 64 KiB.
Body = Text().with_variant(mysql.MEDIUMTEXT(charset="ascii"), "mysql", "mariadb")


class IdempotencyKey(Base):
    """One caller's key. While its first request runs, `status_code` is null and `claim` names
    that request; once it succeeded, the row holds its response until `expires_at`."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(KeyString, primary_key=True)
    # sha256 of what makes two requests "the same": method, path, query and body.
    fingerprint: Mapped[str] = mapped_column(String(64))
    claim: Mapped[str] = mapped_column(String(32))
    # DATETIME(6) on MariaDB (see the migration); UTCDateTime like every timestamp.
    claimed_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    headers: Mapped[str | None] = mapped_column(Text)  # JSON: [[name, value], ...]
    body: Mapped[str | None] = mapped_column(Body)  # base64
    # The body is encrypted (a response that says no-store, e.g. a new API key).
    sealed: Mapped[bool] = mapped_column(default=False)
