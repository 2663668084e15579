"""Create the items catalog, its tag index and the per-owner item counts.

Revision ID: 0003_items
Revises: 0001_users
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from storeroom.core.db import UTCDateTime
from storeroom.core.types import ExactDecimal

revision: str = "0003_items"
down_revision: str | Sequence[str] | None = "0001_users"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Microseconds on MariaDB too (its DATETIME keeps whole seconds), so timestamps read back equal.
Timestamp = UTCDateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
Tag = sa.String(40).with_variant(mysql.VARCHAR(40, collation="utf8mb4_bin"), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("price", ExactDecimal(12, 2), nullable=False),
        sa.Column("tax", ExactDecimal(5, 2), nullable=False, server_default="0"),
        sa.Column("tags", sa.String(820), nullable=False, server_default=""),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_items_owner_id_users"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_items_owner_id_created_at", "items", ["owner_id", "created_at", "id"])
    op.create_index("ix_items_owner_id_name", "items", ["owner_id", "name", "id"])
    op.create_index("ix_items_owner_id_price", "items", ["owner_id", "price", "id"])
    op.create_table(
        "item_tags",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("tag", Tag, nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("item_id", "tag", name=op.f("pk_item_tags")),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["items.id"],
            name=op.f("fk_item_tags_item_id_items"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_item_tags_owner_id_tag", "item_tags", ["owner_id", "tag", "item_id"])
    op.create_table(
        "item_counts",
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("owner_id", name=op.f("pk_item_counts")),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_item_counts_owner_id_users"),
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("item_counts")
    op.drop_table("item_tags")
    op.drop_table("items")
