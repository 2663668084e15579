"""Files: the metadata table; the bytes live in storage under `storage_key`."""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from storeroom.core.db import Base, utcnow


class StoredFile(Base):
    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_owner_id_created_at", "owner_id", "created_at"),
        Index("ix_files_item_id_created_at", "item_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Only ever one of the owner's own items; the file stays (detached) when the item goes.
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(255))  # sanitized; display and headers only
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
