"""Never reuse ids on SQLite, and give every account a token key.

Revision ID: 0005_token_keys
Revises: 0004_files
Create Date: 2026-12-02

SQLite hands out the largest rowid + 1, so after a delete the next row could take a deleted
row's id, and a token naming that id would name someone else. Its tables are rebuilt with
AUTOINCREMENT (their rows copied as they are); PostgreSQL sequences and InnoDB counters never
go back. Each account also gets a random `token_key`, carried in its tokens and checked on
every use; existing refresh tokens take their account's key, so no one is logged out.
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_token_keys"
down_revision: str | Sequence[str] | None = "0004_files"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOKEN_KEY = sa.String(32)
BATCH = 1000
# Tables whose ids a token, key, link or job refers to.
NEVER_REUSED = ("users", "items", "api_keys", "refresh_tokens")

users = sa.table("users", sa.column("id", sa.Integer()), sa.column("token_key", TOKEN_KEY))
refresh_tokens = sa.table(
    "refresh_tokens", sa.column("user_id", sa.Integer()), sa.column("token_key", TOKEN_KEY)
)


def _fill_token_keys(bind: sa.Connection) -> None:
    ids = bind.execute(sa.select(users.c.id)).scalars().all()
    statement = (
        users.update()
        .where(users.c.id == sa.bindparam("user_id"))
        .values(token_key=sa.bindparam("key"))
    )
    for start in range(0, len(ids), BATCH):
        bind.execute(
            statement,
            [
                {"user_id": user_id, "key": secrets.token_hex(16)}
                for user_id in ids[start : start + BATCH]
            ],
        )
    bind.execute(
        refresh_tokens.update().values(
            token_key=sa.select(users.c.token_key)
            .where(users.c.id == refresh_tokens.c.user_id)
            .scalar_subquery()
        )
    )


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.add_column("users", sa.Column("token_key", TOKEN_KEY, nullable=True))
    op.add_column("refresh_tokens", sa.Column("token_key", TOKEN_KEY, nullable=True))
    _fill_token_keys(bind)
    for table in NEVER_REUSED:
        # On SQLite the batch rebuilds the table (reflected, with its indexes, constraints and
        # rows) as AUTOINCREMENT; elsewhere it is a plain ALTER or nothing at all.
        with op.batch_alter_table(
            table,
            recreate="always" if sqlite else "auto",
            table_kwargs={"sqlite_autoincrement": True},
        ) as batch:
            if table in ("users", "refresh_tokens"):
                batch.alter_column("token_key", existing_type=TOKEN_KEY, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("token_key")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_key")
