"""Deleting an account removes everything it owns, rows and bytes, and nothing of anyone else's;
a superuser may delete another account, never their own through that endpoint."""

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Column, Table, event, or_, select, text

from storeroom.core.config import Settings
from storeroom.models import Base
from tests.conftest import PASSWORD, run_in_app
from tests.files.conftest import files_on_disk, uploaded

# The tables an account's rows live in; a new table that refers to users belongs here, and
# in users.service.delete.
ACCOUNT_TABLES = {
    "users",
    "items",
    "item_tags",
    "item_counts",
    "files",
    "api_keys",
    "refresh_tokens",
    "idempotency_keys",
    "jobs",
    "events",
    "event_counters",
    "web_sessions",
}


def user_columns(table: Table) -> list[Column[Any]]:
    """The columns that name a user: a foreign key to users, owner_id/user_id, users.id."""
    return [
        column
        for column in table.columns
        if column.name in ("owner_id", "user_id")
        or any(key.column.table.name == "users" for key in column.foreign_keys)
        or (table.name == "users" and column.name == "id")
    ]


def rows_of(client: TestClient, user_id: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the database that names the user, by table, read straight from the tables."""
    app: FastAPI = client.app  # type: ignore[assignment]

    async def read() -> dict[str, list[tuple[Any, ...]]]:
        rows: dict[str, list[tuple[Any, ...]]] = {}
        async with app.state.engine.connect() as connection:
            for table in Base.metadata.sorted_tables:
                columns = user_columns(table)
                if columns:
                    result = await connection.execute(
                        select(table).where(or_(*(column == user_id for column in columns)))
                    )
                    rows[table.name] = sorted((tuple(row) for row in result), key=repr)
        return rows

    return run_in_app(client, read)


def fill_account(client: TestClient, headers: dict[str, str], label: str) -> int:
    """Something in every table: items with tags (one created under an idempotency key),
    files (one attached), an API key, a job, a web session and the refresh token of the login
    that made `headers` (the account is `<label>@example.com`)."""
    first = client.post(
        "/api/v1/items",
        json={"name": f"{label} lamp", "price": "12.00", "tags": ["home", label]},
        headers={**headers, "Idempotency-Key": f"{label}-lamp"},
    ).json()
    client.post("/api/v1/items", json={"name": "Chair", "price": "40"}, headers=headers)
    uploaded(client, headers, f"{label} photo".encode(), fields={"item_id": str(first["id"])})
    uploaded(client, headers, f"{label} notes".encode())
    key = client.post("/api/v1/users/me/api-keys", json={"name": "script"}, headers=headers)
    assert key.status_code == 201, key.text
    job = client.post(
        "/api/v1/jobs", json={"type": "export_items", "format": "csv"}, headers=headers
    )
    assert job.status_code == 202, job.text
    signed_in = client.post(
        "/login",
        data={"email": f"{label}@example.com", "password": PASSWORD},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert signed_in.status_code == 303, signed_in.text
    client.cookies.clear()  # the session's row is what counts here; requests use `headers`
    user_id: int = first["owner_id"]
    return user_id


def bytes_in_storage(settings: Settings) -> list[bytes]:
    return sorted(path.read_bytes() for path in files_on_disk(settings))


# Statements that switch off foreign-key enforcement, ON DELETE CASCADE included, for a
# connection; and how to read the setting back.
FOREIGN_KEYS_OFF = {
    "sqlite": ("PRAGMA foreign_keys=OFF", "PRAGMA foreign_keys", 0),
    "mysql": ("SET SESSION foreign_key_checks=0", "SELECT @@foreign_key_checks", 0),
    "postgresql": (
        "SET SESSION session_replication_role = replica",
        "SHOW session_replication_role",
        "replica",
    ),
}


def switch_off_foreign_keys(client: TestClient) -> None:
    """From now on every connection of the app ignores foreign keys and their cascades."""
    app: FastAPI = client.app  # type: ignore[assignment]
    engine = app.state.engine
    switch_off, read_back, expected = FOREIGN_KEYS_OFF[engine.dialect.name]

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(switch_off)
        cursor.close()

    event.listen(engine.sync_engine, "connect", on_connect)

    async def reconnect() -> Any:
        await engine.dispose()
        async with engine.connect() as connection:
            return await connection.scalar(text(read_back))

    assert run_in_app(client, reconnect) == expected


def test_every_table_that_refers_to_users_is_covered() -> None:
    referring = {table.name for table in Base.metadata.sorted_tables if user_columns(table)}
    assert referring == ACCOUNT_TABLES


@pytest.mark.parametrize("foreign_keys", ["enforced", "off"])
def test_deleting_ones_account_removes_all_its_rows_and_bytes_and_nothing_else(
    client: TestClient,
    alice: dict[str, str],
    bob: dict[str, str],
    settings: Settings,
    foreign_keys: str,
) -> None:
    alice_id = fill_account(client, alice, "alice")
    bob_id = fill_account(client, bob, "bob")
    assert all(rows_of(client, alice_id).values())  # something of hers in every table
    bobs_rows = rows_of(client, bob_id)
    if foreign_keys == "off":  # no reliance on ON DELETE CASCADE
        switch_off_foreign_keys(client)

    assert client.delete("/api/v1/users/me", headers=alice).status_code == 204

    assert rows_of(client, alice_id) == {table: [] for table in ACCOUNT_TABLES}
    assert rows_of(client, bob_id) == bobs_rows
    assert bytes_in_storage(settings) == [b"bob notes", b"bob photo"]
    bobs_files = client.get("/api/v1/files", headers=bob).json()["items"]
    assert all(
        client.get(f"/api/v1/files/{file['id']}/content", headers=bob).status_code == 200
        for file in bobs_files
    )


def test_a_superuser_deletes_another_account_with_everything_it_owns(
    client: TestClient, admin: dict[str, str], alice: dict[str, str], settings: Settings
) -> None:
    alice_id = fill_account(client, alice, "alice")
    fill_account(client, admin, "admin")

    response = client.delete(f"/api/v1/users/{alice_id}", headers=admin)

    assert response.status_code == 204
    assert rows_of(client, alice_id) == {table: [] for table in ACCOUNT_TABLES}
    assert bytes_in_storage(settings) == [b"admin notes", b"admin photo"]
    assert client.get("/api/v1/users/me", headers=alice).status_code == 401
    assert client.get(f"/api/v1/users/{alice_id}", headers=admin).status_code == 404
    assert client.delete(f"/api/v1/users/{alice_id}", headers=admin).status_code == 404


def test_a_superuser_cannot_delete_their_own_account_as_an_administrator(
    client: TestClient, admin: dict[str, str]
) -> None:
    admin_id = client.get("/api/v1/users/me", headers=admin).json()["id"]
    response = client.delete(f"/api/v1/users/{admin_id}", headers=admin)
    assert response.status_code == 403
    assert response.json()["code"] == "cannot_delete_self"
    assert client.get("/api/v1/users/me", headers=admin).status_code == 200


def test_only_a_superuser_deletes_accounts_by_id(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    alice_id = client.get("/api/v1/users/me", headers=alice).json()["id"]
    bob_id = client.get("/api/v1/users/me", headers=bob).json()["id"]
    assert client.delete(f"/api/v1/users/{bob_id}", headers=alice).status_code == 404
    own = client.delete(f"/api/v1/users/{alice_id}", headers=alice)
    assert own.status_code == 403
    assert own.json()["code"] == "permission_denied"
    assert client.delete(f"/api/v1/users/{bob_id}").status_code == 401
    for headers in (alice, bob):
        assert client.get("/api/v1/users/me", headers=headers).status_code == 200


def test_a_read_only_api_key_cannot_delete_the_account(
    client: TestClient, alice: dict[str, str]
) -> None:
    key = client.post(
        "/api/v1/users/me/api-keys", json={"name": "reader", "scope": "read"}, headers=alice
    ).json()["key"]
    assert client.delete("/api/v1/users/me", headers={"X-API-Key": key}).status_code == 403
    assert (
        client.post(
            "/api/v1/auth/token", data={"username": "alice@example.com", "password": PASSWORD}
        ).status_code
        == 200
    )
