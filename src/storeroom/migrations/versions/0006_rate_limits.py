"""Atomic rate limits, and emails compared exactly on MariaDB.

Revision ID: 0006_rate_limits
Revises: 0005_token_keys
Create Date: 2026-12-09

`rate_limit_locks` holds one row per rate-limit key, locked while an attempt is counted, so a
burst of attempts cannot all pass the count before any of them is recorded; `request_hits`
counts requests to the endpoints limited per caller (registration, password recovery).

MariaDB's default collations compare "càrol@example.com" equal to "carol@example.com", so the
one logged into the other and the unique index kept them from being two accounts. `users.email`
and `login_failures.account` become utf8mb4_bin (as `item_tags.tag` already is): compared byte
for byte, as SQLite and PostgreSQL do. Rows are kept as they are; a binary collation is
stricter, so no existing pair of addresses can collide. A downgrade fails if two accounts have
come to differ only by accents meanwhile (letter case is folded before anything is stored).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from storeroom.core.db import UTCDateTime

revision: str = "0006_rate_limits"
down_revision: str | Sequence[str] | None = "0005_token_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY_LENGTH = 300
# The columns that hold an email (or a limiter key made of one), exact on MariaDB from now on.
EMAIL_COLUMNS = (("users", "email", 254), ("login_failures", "account", 254))


def _exact(length: int) -> sa.String:
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def upgrade() -> None:
    op.create_table(
        "rate_limit_locks",
        sa.Column("key", _exact(KEY_LENGTH), nullable=False),
        sa.Column("locked_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limit_locks")),
    )
    op.create_index(op.f("ix_rate_limit_locks_locked_at"), "rate_limit_locks", ["locked_at"])
    op.create_table(
        "request_hits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", _exact(KEY_LENGTH), nullable=False),
        sa.Column("hit_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_hits")),
    )
    op.create_index("ix_request_hits_key_hit_at", "request_hits", ["key", "hit_at"])
    op.create_index(op.f("ix_request_hits_hit_at"), "request_hits", ["hit_at"])
    if op.get_bind().dialect.name == "mysql":
        for table, column, length in EMAIL_COLUMNS:
            op.alter_column(
                table,
                column,
                existing_type=sa.String(length),
                type_=mysql.VARCHAR(length, collation="utf8mb4_bin"),
                existing_nullable=False,
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        for table, column, length in EMAIL_COLUMNS:
            op.alter_column(
                table,
                column,
                existing_type=mysql.VARCHAR(length, collation="utf8mb4_bin"),
                type_=sa.String(length),  # back to the table's default collation
                existing_nullable=False,
            )
    op.drop_table("request_hits")
    op.drop_table("rate_limit_locks")
