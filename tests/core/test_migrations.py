"""Migrations keep what is in the database: 0005 gives existing accounts a token key and keeps
their sessions, and on SQLite rebuilds the tables whose ids must never be reused; 0006 keeps
every account and makes emails compare exactly on every database."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from storeroom.core.config import async_database_url
from storeroom.core.migrations import upgrade
from tests.conftest import SERVER_URLS, _recreate_server_database

NEVER_REUSED = ("users", "items", "api_keys", "refresh_tokens")

SEED = [
    "INSERT INTO users (email, hashed_password, is_active, is_superuser, created_at,"
    " updated_at) VALUES ('a@example.com', 'h1', true, false, '2026-01-01 00:00:00',"
    " '2026-01-01 00:00:00'), ('b@example.com', 'h2', true, false, '2026-01-01 00:00:00',"
    " '2026-01-01 00:00:00')",
    "INSERT INTO items (owner_id, name, price, tax, tags, version, created_at, updated_at)"
    " VALUES (1, 'Lamp', 10, 0, 'home', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    "INSERT INTO api_keys (user_id, name, prefix, key_hash, scope, created_at) VALUES"
    " (2, 'ci', 'sr_abcdefgh', 'k1', 'read', '2026-01-01 00:00:00')",
    "INSERT INTO refresh_tokens (user_id, family_id, token_hash, created_at, expires_at)"
    " VALUES (1, 'f1', 't1', '2026-01-01 00:00:00', '2026-02-01 00:00:00'),"
    " (2, 'f2', 't2', '2026-01-01 00:00:00', '2026-02-01 00:00:00')",
]


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def empty_database(
    request: pytest.FixtureRequest, migrated_databases: dict[str, str], tmp_path: Path
) -> str:
    backend: str = request.param
    if backend == "sqlite":
        return async_database_url(f"sqlite:///{tmp_path / 'old.db'}")
    if backend not in migrated_databases:
        pytest.skip(f"{backend} not enabled")
    url = make_url(async_database_url(SERVER_URLS[backend]))
    url = url.set(database=f"{url.database}_migrations")
    asyncio.run(_recreate_server_database(backend, url))
    return url.render_as_string(hide_password=False)


async def _run(url: str, statements: list[str]) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _inspect(url: str) -> dict[str, Any]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            users = (await connection.execute(text("SELECT id, token_key FROM users"))).all()
            tokens = (
                await connection.execute(text("SELECT user_id, token_key FROM refresh_tokens"))
            ).all()
            counts = {
                table: (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar()
                for table in NEVER_REUSED
            }
            indexes = {
                table: await connection.run_sync(
                    lambda sync, t=table: sorted(
                        i["name"] or "" for i in inspect(sync).get_indexes(t)
                    )
                )
                for table in NEVER_REUSED
            }
            ddl = {}
            if connection.dialect.name == "sqlite":
                ddl = dict(
                    (await connection.execute(text("SELECT name, sql FROM sqlite_master"))).all()
                )
    finally:
        await engine.dispose()
    return {
        "users": dict(users),
        "tokens": dict(tokens),
        "counts": counts,
        "indexes": indexes,
        "ddl": ddl,
    }


def test_0005_keeps_rows_and_sessions_and_stops_id_reuse(empty_database: str) -> None:
    upgrade(empty_database, "0004_files")
    asyncio.run(_run(empty_database, SEED))

    upgrade(empty_database)
    after = asyncio.run(_inspect(empty_database))

    assert after["counts"] == {"users": 2, "items": 1, "api_keys": 1, "refresh_tokens": 2}
    keys = after["users"]
    assert len(set(keys.values())) == 2 and all(len(key) == 32 for key in keys.values())
    # Existing refresh tokens carry their account's key: nobody is logged out by the upgrade.
    assert after["tokens"] == {1: keys[1], 2: keys[2]}
    assert after["indexes"]["items"] == [
        "ix_items_owner_id_created_at",
        "ix_items_owner_id_name",
        "ix_items_owner_id_price",
    ]
    if after["ddl"]:
        for table in NEVER_REUSED:
            assert "AUTOINCREMENT" in after["ddl"][table], after["ddl"][table]

    asyncio.run(
        _run(
            empty_database,
            [
                "DELETE FROM users WHERE id = 2",
                "INSERT INTO users (email, hashed_password, is_active, is_superuser, created_at,"
                " updated_at, token_key) VALUES ('c@example.com', 'h3', true, false,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00', 'k')",
            ],
        )
    )
    assert sorted(asyncio.run(_inspect(empty_database))["users"]) == [1, 3]


async def _count_users(url: str, email: str) -> int:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            found = await connection.execute(
                text("SELECT count(*) FROM users WHERE email = :email"), {"email": email}
            )
            return int(found.scalar_one())
    finally:
        await engine.dispose()


def test_0006_keeps_accounts_and_compares_emails_exactly(empty_database: str) -> None:
    upgrade(empty_database, "0005_token_keys")
    asyncio.run(
        _run(
            empty_database,
            [
                "INSERT INTO users (email, hashed_password, is_active, is_superuser, created_at,"
                " updated_at, token_key) VALUES ('carol@example.com', 'h1', true, false,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00', 'k1')",
                "INSERT INTO login_failures (account, client_ip, failed_at) VALUES"
                " ('carol@example.com', '192.0.2.1', '2026-01-01 00:00:00')",
            ],
        )
    )

    upgrade(empty_database)

    assert asyncio.run(_count_users(empty_database, "carol@example.com")) == 1
    assert asyncio.run(_count_users(empty_database, "càrol@example.com")) == 0
    asyncio.run(
        _run(
            empty_database,
            [
                "INSERT INTO users (email, hashed_password, is_active, is_superuser, created_at,"
                " updated_at, token_key) VALUES ('càrol@example.com', 'h2', true, false,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00', 'k2')",
            ],
        )
    )
    assert asyncio.run(_count_users(empty_database, "càrol@example.com")) == 1
    assert asyncio.run(_count_users(empty_database, "carol@example.com")) == 1
