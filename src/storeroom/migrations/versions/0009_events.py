"""Create events and event_counters: the embedded live-event log (Redis keeps it when set).

Revision ID: 0009_events
Revises: 0008_jobs
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from storeroom.core.db import UTCDateTime

revision: str = "0009_events"
down_revision: str | Sequence[str] | None = "0008_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = UTCDateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_events_owner_id_users"), ondelete="CASCADE"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_owner_id_seq", "events", ["owner_id", "seq"], unique=True)
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_table(
        "event_counters",
        sa.Column("owner_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", name=op.f("pk_event_counters")),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_event_counters_owner_id_users"),
            ondelete="CASCADE",
        ),
    )
    # Every existing account gets its counter now: taking the next id is then one UPDATE.
    op.execute("INSERT INTO event_counters (owner_id, last_seq) SELECT id, 0 FROM users")


def downgrade() -> None:
    op.drop_table("event_counters")
    op.drop_table("events")
