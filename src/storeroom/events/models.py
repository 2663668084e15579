"""Events: the tables of the embedded event log (with STOREROOM_REDIS_URL, Redis keeps it)."""

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storeroom.core.db import Base, utcnow

# SQLite hands out increasing ids only to an INTEGER PRIMARY KEY (AUTOINCREMENT: never reused).
EventId = BigInteger().with_variant(Integer(), "sqlite")


class Event(Base):
    """One event of one user. `id` orders the whole log (API processes tail it); `seq` is the
    id the user's clients see: 1, 2, 3, ... per user, in the order the changes committed."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_owner_id_seq", "owner_id", "seq", unique=True),
        Index("ix_events_created_at", "created_at"),  # the retention sweep
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(32))
    # The event as its clients receive it, JSON encoded once when it is recorded.
    payload: Mapped[str] = mapped_column(Text)
    # Microseconds on MariaDB too (the migration's DATETIME(6)).
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventCounter(Base):
    """The last `seq` given to each user's events. Taking the next one locks the row until the
    transaction ends, so one user's events commit in the order of their ids."""

    __tablename__ = "event_counters"

    owner_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
