"""Create idempotency_keys: the Idempotency-Key of each caller's creates, with the first response.

Revision ID: 0007_idempotency_keys
Revises: 0006_rate_limits
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from storeroom.core.db import UTCDateTime

revision: str = "0007_idempotency_keys"
down_revision: str | Sequence[str] | None = "0006_rate_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Keys compare byte for byte (MariaDB's default collation ignores letter case).
Key = sa.String(255).with_variant(
    mysql.VARCHAR(255, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
)
# Microseconds on MariaDB too (its DATETIME keeps whole seconds).
Timestamp = UTCDateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Base64 text (aiomysql cannot bind bytes with PyMySQL 1.2); MariaDB's TEXT stops at 64 KiB.
Body = sa.Text().with_variant(mysql.MEDIUMTEXT(charset="ascii"), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", Key, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("claim", sa.String(32), nullable=False),
        sa.Column("claimed_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column("body", Body, nullable=True),
        sa.Column("sealed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_keys")),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_idempotency_keys_user_id_users"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
