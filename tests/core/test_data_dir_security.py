"""The data directory: the development signing key and the SQLite database stay the owner's."""

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import storeroom
from storeroom import cli
from storeroom.core.config import ConfigurationError, Settings, get_settings
from storeroom.core.migrations import upgrade
from storeroom.main import create_app
from tests.conftest import TEST_SECRET_KEY, login, register

# Events Python audits just before it opens, links, renames, chmods or removes a file.
_FILE_EVENTS = frozenset({"open", "os.chmod", "os.link", "os.rename", "os.replace", "os.remove"})


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The common umask: whatever Storeroom does not restrict itself comes out 0644 / 0755."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class FileModeWatcher:
    """Notes the mode of every file in a directory just before each file operation Python
    makes. A poller racing the code would need luck to land in the microseconds between a
    file's creation and a later chmod; this sees every state the code leaves the file in."""

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.seen: set[tuple[str, int]] = set()
        self._busy = False

    def __call__(self, event: str, _args: tuple[Any, ...]) -> None:
        if self.directory is None or self._busy or event not in _FILE_EVENTS:
            return
        self._busy = True  # scandir is audited too
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        file_mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                        self.seen.add((entry.name, file_mode))
        except FileNotFoundError:
            pass
        finally:
            self._busy = False


_watcher: FileModeWatcher | None = None


@pytest.fixture
def file_modes() -> Iterator[FileModeWatcher]:
    global _watcher
    if _watcher is None:  # an audit hook cannot be removed: install one, switch it on and off
        _watcher = FileModeWatcher()
        sys.addaudithook(_watcher)
    _watcher.seen = set()
    yield _watcher
    _watcher.directory = None


# The development signing key


def test_the_generated_key_file_is_never_readable_by_others(
    tmp_path: Path, file_modes: FileModeWatcher
) -> None:
    file_modes.directory = tmp_path
    key = Settings(data_dir=tmp_path).signing_key()
    file_modes.directory = None
    assert len(key) >= 32
    assert mode(tmp_path / "secret_key") == 0o600
    assert ("secret_key", 0o600) in file_modes.seen
    assert {file_mode for _name, file_mode in file_modes.seen} == {0o600}
    assert [path.name for path in tmp_path.iterdir()] == ["secret_key"]  # no temp file left


def test_a_created_data_dir_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    Settings(data_dir=data_dir).signing_key()
    assert mode(tmp_path / "new") == 0o700
    assert mode(data_dir) == 0o700


# Each process reads lines of "<data dir> <start time>", waits for that moment (spinning, to
# wake up within microseconds of the others) and prints the key it got there.
_KEY_RACER = """
import sys
import time
from pathlib import Path

from storeroom.core.config import Settings

for line in sys.stdin:
    data_dir, start_at = line.split()
    while time.time() < float(start_at):
        pass
    try:
        key = Settings(data_dir=Path(data_dir)).signing_key()
    except Exception as exc:
        key = f"raised {exc!r}"
    print(key, flush=True)
"""


def test_processes_starting_together_share_one_complete_key(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("STOREROOM")}
    env["PYTHONPATH"] = str(Path(storeroom.__file__).parents[1])  # the code under test
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _KEY_RACER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for _ in range(4)
    ]
    try:
        for attempt in range(50):
            data_dir = tmp_path / f"attempt-{attempt}"
            start_at = time.time() + 0.01
            for racer in racers:
                assert racer.stdin is not None
                racer.stdin.write(f"{data_dir} {start_at}\n")
                racer.stdin.flush()
            keys = set()
            for racer in racers:
                assert racer.stdout is not None
                keys.add(racer.stdout.readline().strip())
            assert len(keys) == 1, f"processes got different keys: {keys}"
            [key] = keys
            assert len(key) >= 32, f"a process got part of the key: {key!r}"
            assert (data_dir / "secret_key").read_text(encoding="utf-8") == key
    finally:
        for racer in racers:
            racer.kill()
            racer.wait()


@pytest.mark.parametrize("loose_mode", [0o644, 0o640, 0o602], ids=oct)
def test_a_key_file_others_can_reach_stops_the_app(tmp_path: Path, loose_mode: int) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("k" * 64, encoding="utf-8")
    key_file.chmod(loose_mode)
    with pytest.raises(ConfigurationError, match=f"chmod 600 {key_file}"):
        create_app(Settings(data_dir=tmp_path))
    assert mode(key_file) == loose_mode  # the operator decides; nothing is changed behind them


def test_storeroom_serve_exits_2_on_a_key_file_others_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("k" * 64, encoding="utf-8")
    key_file.chmod(0o644)
    monkeypatch.setenv("STOREROOM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("STOREROOM_SECRET_KEY", raising=False)
    served: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: served.append(args))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.app, ["serve"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert f"chmod 600 {key_file}" in result.stderr
    assert served == []


def test_an_empty_key_file_stops_the_app(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key_file.touch(mode=0o600)
    with pytest.raises(ConfigurationError, match=str(key_file)):
        create_app(Settings(data_dir=tmp_path))


# The SQLite database


def sqlite_files(database: Path) -> dict[str, int]:
    """Mode of the database and of its -wal and -shm files, those that exist."""
    candidates = [database, *(Path(f"{database}{suffix}") for suffix in ("-wal", "-shm"))]
    return {path.name: mode(path) for path in candidates if path.exists()}


def test_the_app_creates_a_private_data_dir_and_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, secret_key=TEST_SECRET_KEY)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 503  # reached the (new, empty) database
        files = sqlite_files(data_dir / "storeroom.db")
    assert mode(data_dir) == 0o700
    assert files == {"storeroom.db": 0o600, "storeroom.db-wal": 0o600, "storeroom.db-shm": 0o600}


def test_migrate_then_serve_keeps_the_database_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    settings = Settings(data_dir=data_dir, secret_key=TEST_SECRET_KEY)
    upgrade(settings.database_url)  # what `storeroom migrate` runs
    assert mode(tmp_path / "new") == 0o700
    assert mode(data_dir) == 0o700
    assert sqlite_files(data_dir / "storeroom.db") == {"storeroom.db": 0o600}
    with TestClient(create_app(settings)) as client:
        register(client, "alice@example.com")
        login(client, "alice@example.com")
        files = sqlite_files(data_dir / "storeroom.db")
    assert files == {"storeroom.db": 0o600, "storeroom.db-wal": 0o600, "storeroom.db-shm": 0o600}


def _database_open_to_others(path: Path) -> sqlite3.Connection:
    """A database as an earlier Storeroom left it under umask 022: 0644, WAL files included
    (kept by the open connection)."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE leftover (email TEXT)")
    connection.execute("INSERT INTO leftover VALUES ('alice@example.com')")
    connection.commit()
    return connection


def test_startup_tightens_a_database_open_to_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    database = data_dir / "storeroom.db"
    settings = Settings(data_dir=data_dir, secret_key=TEST_SECRET_KEY)
    connection = _database_open_to_others(database)
    try:
        assert set(sqlite_files(database).values()) == {0o644}
        with caplog.at_level(logging.WARNING, logger="storeroom"):
            with TestClient(create_app(settings)):
                pass
            tightened = sqlite_files(database)
            with TestClient(create_app(settings)):
                pass
    finally:
        connection.close()
    assert tightened == {
        "storeroom.db": 0o600,
        "storeroom.db-wal": 0o600,
        "storeroom.db-shm": 0o600,
    }
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert str(database.parent) in warning.getMessage()


def test_migrate_tightens_a_database_open_to_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "storeroom.db"
    _database_open_to_others(database).close()
    database.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="storeroom"):
        upgrade(f"sqlite:///{database}")
    assert sqlite_files(database) == {"storeroom.db": 0o600}
    assert "storeroom.db" in caplog.text


def test_a_data_dir_the_user_made_is_left_alone_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "shared"
    data_dir.mkdir(mode=0o755)
    settings = Settings(data_dir=data_dir, secret_key=TEST_SECRET_KEY)
    with caplog.at_level(logging.WARNING, logger="storeroom"), TestClient(create_app(settings)):
        pass
    assert mode(data_dir) == 0o755
    assert f"chmod 700 {data_dir}" in caplog.text
    assert sqlite_files(data_dir / "storeroom.db")["storeroom.db"] == 0o600


def test_uploads_and_emails_land_in_private_directories(
    client: TestClient, settings: Settings, alice: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/files", files={"file": ("a.txt", b"hello", "text/plain")}, headers=alice
    )
    assert response.status_code == 201, response.text
    directories = [settings.data_dir, *(p for p in settings.data_dir.rglob("*") if p.is_dir())]
    assert {path.name for path in directories} >= {"data", "files", "outbox"}
    assert {str(path): mode(path) for path in directories} == {
        str(path): 0o700 for path in directories
    }
