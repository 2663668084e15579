"""Nothing leaks: interrupted uploads leave nothing, abandoned temp files are swept, and
`storeroom files verify` reports rows and bytes that lost each other."""

import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete
from typer.testing import CliRunner

from storeroom.cli import app as cli
from storeroom.core.config import Settings, get_settings
from storeroom.files import service as files_service
from storeroom.users.models import User
from tests.conftest import TEST_SECRET_KEY, login, run_in_app
from tests.files.conftest import MULTIPART, files_on_disk, multipart_body, uploaded
from tests.s3 import StoreView, storage_env

TWO_HOURS = 2 * 3600


def temp_file(settings: Settings, age_seconds: float) -> Path:
    """An upload's temp file as a crashed server would leave it, last written `age` ago."""
    key = uuid.uuid4().hex
    path = settings.data_dir / "files" / key[:2] / f".{key}.part"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half an upload")
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))
    return path


def post_upload_raw(
    client: TestClient,
    headers: dict[str, str],
    messages: list[dict[str, Any]],
    content_length: int,
    before_second_message: Callable[[], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """POST /api/v1/files straight through ASGI, feeding the body `messages` one per receive
    (so a test can cut the body off or act halfway); returns what the app sent."""
    app: FastAPI = client.app  # type: ignore[assignment]
    sent: list[dict[str, Any]] = []
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 2 and before_second_message is not None:
            await before_second_message()
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/files",
        "raw_path": b"/api/v1/files",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", headers["Authorization"].encode()),
            (b"content-type", MULTIPART.encode()),
            (b"content-length", str(content_length).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def call() -> None:
        await app(scope, receive, send)

    run_in_app(client, call)
    return sent


def test_an_upload_cut_off_by_the_client_leaves_nothing(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    body = multipart_body(b"x" * 900)
    sent = post_upload_raw(
        client,
        alice,
        [
            {"type": "http.request", "body": body[:600], "more_body": True},
            {"type": "http.disconnect"},
        ],
        len(body),
    )
    assert sent[0]["status"] == 400
    assert b"upload_interrupted" in sent[1]["body"]
    assert files_on_disk(settings) == []
    assert client.get("/api/v1/files", headers=alice).json()["total"] == 0


def test_an_upload_whose_account_is_deleted_meanwhile_leaves_nothing(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    body = multipart_body(b"x" * 900)
    app: FastAPI = client.app  # type: ignore[assignment]

    async def delete_alice() -> None:
        async with app.state.sessionmaker() as session, session.begin():
            await session.execute(delete(User).where(User.email == "alice@example.com"))

    sent = post_upload_raw(
        client,
        alice,
        [
            {"type": "http.request", "body": body[:600], "more_body": True},
            {"type": "http.request", "body": body[600:], "more_body": False},
        ],
        len(body),
        before_second_message=delete_alice,
    )
    assert sent[0]["status"] == 401
    assert files_on_disk(settings) == []


# Temp files are local storage's (test_s3.py sweeps stale multipart uploads).
local_files = pytest.mark.parametrize("storage_backend", ["file"])


@local_files
def test_old_temp_files_are_swept_at_startup_and_fresh_ones_kept(
    app: FastAPI, settings: Settings
) -> None:
    abandoned = temp_file(settings, TWO_HOURS)
    in_progress = temp_file(settings, 60)
    with TestClient(app):
        assert not abandoned.exists()
        assert in_progress.exists()


@local_files
def test_old_temp_files_are_swept_periodically(settings: Settings) -> None:
    from storeroom.main import create_app

    app = create_app(settings.model_copy(update={"file_sweep_interval_seconds": 0.05}))
    with TestClient(app):
        abandoned = temp_file(settings, TWO_HOURS)
        deadline = time.monotonic() + 10
        while abandoned.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not abandoned.exists()


@pytest.fixture
def verify(settings: Settings) -> Iterator[Any]:
    """Run `storeroom files verify` against the test database and data directory."""
    env = {
        "STOREROOM_DATABASE_URL": settings.database_url,
        "STOREROOM_DATA_DIR": str(settings.data_dir),
        "STOREROOM_SECRET_KEY": TEST_SECRET_KEY,
        **storage_env(settings),
    }

    def run(*options: str) -> Any:
        get_settings.cache_clear()
        return CliRunner().invoke(cli, ["files", "verify", *options], env=env)

    yield run
    get_settings.cache_clear()


def test_verify_passes_when_rows_and_bytes_agree(
    client: TestClient, alice: dict[str, str], verify: Any
) -> None:
    uploaded(client, alice, b"fine")
    result = verify()
    assert result.exit_code == 0, result.output
    assert "1 rows, 1 blobs: 0 rows without bytes, 0 blobs without rows" in result.output


def test_verify_reports_rows_without_bytes_and_bytes_without_rows(
    client: TestClient, alice: dict[str, str], settings: Settings, verify: Any
) -> None:
    lost = uploaded(client, alice, b"lost bytes")
    uploaded(client, alice, b"fine")
    lost_key = next(blob for blob in files_on_disk(settings) if blob.read_bytes() == b"lost bytes")
    lost_key.unlink()
    stray_key = "f" * 32
    view = StoreView(settings)
    view.put(stray_key, b"nobody's")
    # An upload in progress is neither.
    if view.s3:
        view.start_upload()
    else:
        temp_file(settings, 10)

    result = verify()
    assert result.exit_code == 1
    assert f"row without bytes: file {lost}" in result.output
    assert f"bytes without row: key {stray_key} (8 bytes)" in result.output
    assert "2 rows, 2 blobs: 1 rows without bytes, 1 blobs without rows" in result.output


def test_verify_can_remove_old_bytes_without_rows(
    client: TestClient,
    alice: dict[str, str],
    settings: Settings,
    verify: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uploaded(client, alice, b"kept")
    view = StoreView(settings)
    old, fresh = "e" * 32, "e" * 31 + "0"
    if view.s3:
        # The store stamps its objects itself (to the second): one made well before the other,
        # and "old" set to mean older than a second after the first (the CLI may start slowly).
        view.put(old, b"orphan")
        between = time.time() + 1
        time.sleep(5)
        view.put(fresh, b"orphan")
        monkeypatch.setattr(
            files_service, "INCOMPLETE_UPLOAD_MAX_AGE_SECONDS", time.time() - between
        )
    else:
        view.put(old, b"orphan", age_seconds=TWO_HOURS)
        view.put(fresh, b"orphan")

    result = verify("--remove-unreferenced")
    assert "removed 1 blobs without rows" in result.output
    names = [blob.name for blob in files_on_disk(settings)]
    assert old not in names
    assert fresh in names
    assert verify().exit_code == 1  # the fresh one is still reported
    assert client.get("/api/v1/files", headers=alice).json()["total"] == 1


def test_bytes_left_by_a_failed_removal_after_an_account_deletion_are_reclaimed(
    client: TestClient,
    alice: dict[str, str],
    settings: Settings,
    verify: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The crash window of deleting an account: the rows are committed away, then removing the
    bytes fails. What is left is bytes without rows, which verify reports and reclaims."""
    uploaded(client, alice, b"first")
    uploaded(client, alice, b"second")
    app: FastAPI = client.app  # type: ignore[assignment]

    async def storage_down(key: str) -> None:
        raise OSError("storage unavailable")

    monkeypatch.setattr(app.state.file_storage, "delete", storage_down)
    assert client.delete("/api/v1/users/me", headers=alice).status_code == 204
    monkeypatch.undo()

    left = files_on_disk(settings)
    assert sorted(blob.read_bytes() for blob in left) == [b"first", b"second"]
    report = verify()
    assert report.exit_code == 1
    assert "0 rows, 2 blobs: 0 rows without bytes, 2 blobs without rows" in report.output
    for blob in left:
        assert f"bytes without row: key {blob.name}" in report.output
    monkeypatch.setattr(files_service, "INCOMPLETE_UPLOAD_MAX_AGE_SECONDS", 0)
    assert "removed 2 blobs without rows" in verify("--remove-unreferenced").output
    assert files_on_disk(settings) == []


class CommitFailure:
    """Once armed, the app's next COMMIT fails the way it does when the database goes away
    at that moment: the transaction is lost and the driver raises."""

    def __init__(self, dialect: Any) -> None:
        self.armed = False
        self.failed = 0
        self._dialect = dialect
        self._commit = dialect.do_commit

    def __call__(self, dbapi_connection: Any) -> None:
        if not self.armed:
            self._commit(dbapi_connection)
            return
        self.armed = False
        self.failed += 1
        dbapi_connection.rollback()
        raise self._dialect.loaded_dbapi.OperationalError("connection lost during COMMIT")


@pytest.fixture
def commit_failure(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> CommitFailure:
    app: FastAPI = client.app  # type: ignore[assignment]
    dialect = app.state.engine.dialect
    failure = CommitFailure(dialect)
    monkeypatch.setattr(dialect, "do_commit", failure)
    return failure


def test_a_file_deletion_whose_commit_fails_keeps_the_row_and_its_bytes(
    client: TestClient, alice: dict[str, str], commit_failure: CommitFailure
) -> None:
    file_id = uploaded(client, alice, b"keep me")
    commit_failure.armed = True
    assert client.delete(f"/api/v1/files/{file_id}", headers=alice).status_code == 500
    assert commit_failure.failed == 1
    download = client.get(f"/api/v1/files/{file_id}/content", headers=alice)
    assert download.status_code == 200, download.text
    assert download.content == b"keep me"


def test_an_account_deletion_whose_commit_fails_keeps_everything(
    client: TestClient, alice: dict[str, str], commit_failure: CommitFailure
) -> None:
    file_id = uploaded(client, alice, b"keep me")
    commit_failure.armed = True
    assert client.delete("/api/v1/users/me", headers=alice).status_code == 500
    assert commit_failure.failed == 1
    again = login(client, "alice@example.com")
    download = client.get(f"/api/v1/files/{file_id}/content", headers=again)
    assert download.status_code == 200
    assert download.content == b"keep me"
