"""Browser sessions: one row per signed-in browser, found by the hash of its cookie."""

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from storeroom.core.db import NEVER_REUSE_IDS, Base


class WebSession(Base):
    """A browser's sign-in. The cookie holds a random token; only its sha256 is kept, so a copy
    of the database signs nobody in. Deleting the row (sign-out) ends the session at once."""

    __tablename__ = "web_sessions"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The account's token key at sign-in: a password or email change, or a deactivation, draws
    # a new one, and every session opened before stops working (see `User.token_key`).
    token_key: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
