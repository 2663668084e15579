"""Create the files table (metadata of stored uploads).

Revision ID: 0004_files
Revises: 0003_items
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from storeroom.core.db import UTCDateTime

revision: str = "0004_files"
down_revision: str | Sequence[str] | None = "0003_items"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(64), nullable=False),
        # Microseconds on MariaDB too, so a file reads back exactly as its upload returned it.
        sa.Column(
            "created_at",
            UTCDateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_files_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["items.id"],
            name=op.f("fk_files_item_id_items"),
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint("storage_key", name=op.f("uq_files_storage_key")),
    )
    op.create_index("ix_files_owner_id_created_at", "files", ["owner_id", "created_at"])
    op.create_index("ix_files_item_id_created_at", "files", ["item_id", "created_at"])


def downgrade() -> None:
    op.drop_table("files")  # with its indexes (MariaDB refuses to drop an FK's index alone)
