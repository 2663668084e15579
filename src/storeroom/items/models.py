"""Items: the catalog table and the tag index beside it."""

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from storeroom.core.db import NEVER_REUSE_IDS, Base, utcnow
from storeroom.core.etags import format_etag
from storeroom.core.types import ExactDecimal

TAG_SEPARATOR = ";"

# Tags compare byte for byte: MariaDB's default collation would call "cafe" and "café" equal.
TagString = String(40).with_variant(mysql.VARCHAR(40, collation="utf8mb4_bin"), "mysql", "mariadb")


class Item(Base):
    """One catalog entry. `tags` is kept twice on purpose: joined in `tags_text` so a read is one
    row, and one row per tag in `item_tags` so filtering by tag is an index lookup."""

    __tablename__ = "items"
    __table_args__ = (
        Index("ix_items_owner_id_created_at", "owner_id", "created_at", "id"),
        Index("ix_items_owner_id_name", "owner_id", "name", "id"),
        Index("ix_items_owner_id_price", "owner_id", "price", "id"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    price: Mapped[Decimal] = mapped_column(ExactDecimal(12, 2))
    tax: Mapped[Decimal] = mapped_column(ExactDecimal(5, 2), default=Decimal("0.00"))
    tags_text: Mapped[str] = mapped_column("tags", String(820), default="")
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def tags(self) -> list[str]:
        return split_tags(self.tags_text)

    @property
    def etag(self) -> str:
        return format_etag(self.version)


class ItemTag(Base):
    """One row per (item, tag); `owner_id` is copied from the item (it never changes) so that
    "alice's items tagged x" is a single index range."""

    __tablename__ = "item_tags"
    __table_args__ = (Index("ix_item_tags_owner_id_tag", "owner_id", "tag", "item_id"),)

    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(TagString, primary_key=True)
    owner_id: Mapped[int] = mapped_column(Integer)


class ItemCount(Base):
    """How many items each owner has, kept in step by the service in the same transaction as
    the insert or delete, so an unfiltered list reads its total from one row instead of
    counting the owner's items on every request."""

    __tablename__ = "item_counts"

    owner_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    total: Mapped[int] = mapped_column(Integer, default=0)


def split_tags(tags_text: str) -> list[str]:
    return tags_text.split(TAG_SEPARATOR) if tags_text else []


def join_tags(tags: list[str]) -> str:
    return TAG_SEPARATOR.join(tags)
