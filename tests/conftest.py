"""Test plumbing: every database test runs on SQLite, and on MariaDB and PostgreSQL when
STOREROOM_TEST_SERVICES is set ("auto": when reachable; "required": fail if unreachable).

Each test gets a clean database: SQLite gets a fresh copy of a migrated file; MariaDB and
PostgreSQL are dropped, recreated and migrated once per session and emptied before each test.
The schema always comes from the Alembic migrations, never from create_all.
"""

import asyncio
import os
import secrets
import shutil
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from storeroom.core.config import Settings, async_database_url
from storeroom.core.migrations import upgrade
from storeroom.main import create_app
from storeroom.models import Base
from storeroom.users.models import User
from tests.s3 import AWS_ENV, MotoServer, moto_server
from tests.smtp import SmtpServer

T = TypeVar("T")

# A test run builds hundreds of apps in one process; freezing each one's startup objects out of
# the garbage collector would keep them all alive.
os.environ.setdefault("STOREROOM_GC_FREEZE", "false")
# Apps under test start no job worker of their own; tests/jobs starts real ones as it needs them.
os.environ.setdefault("STOREROOM_EMBEDDED_WORKER", "false")

SERVICES_MODE = os.environ.get("STOREROOM_TEST_SERVICES", "").strip().lower()
SERVER_URLS = {
    "postgresql": os.environ.get(
        "STOREROOM_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/storeroom_test"
    ),
    "mariadb": os.environ.get(
        "STOREROOM_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/storeroom_test"
    ),
}
BACKENDS = ["sqlite", "mariadb", "postgresql"]
TEST_SECRET_KEY = secrets.token_urlsafe(48)
PASSWORD = "correct-horse-battery"


def pytest_report_header() -> str:
    servers = "skipped (set STOREROOM_TEST_SERVICES=auto|required to run them)"
    if SERVICES_MODE:
        servers = f"{SERVICES_MODE}: " + ", ".join(
            f"{name}={make_url(url).render_as_string(hide_password=True)}"
            for name, url in SERVER_URLS.items()
        )
    return f"storeroom database backends: sqlite always; mariadb/postgresql {servers}"


async def _recreate_server_database(backend: str, url: URL) -> None:
    database = url.database
    assert database and database.replace("_", "").isalnum(), database
    maintenance = url.set(database="postgres" if backend == "postgresql" else "mysql")
    if backend == "postgresql":
        engine = create_async_engine(maintenance, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        statements = [
            f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
            f'CREATE DATABASE "{database}"',
        ]
    else:
        engine = create_async_engine(maintenance, poolclass=NullPool)
        statements = [
            f"DROP DATABASE IF EXISTS `{database}`",
            f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        ]
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
            await connection.commit()
    finally:
        await engine.dispose()


async def _empty_tables(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                names = ", ".join(f'"{name}"' for name in tables)
                await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for name in tables:
                    await connection.execute(text(f"DELETE FROM `{name}`"))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def migrated_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Backend name -> URL of a migrated database (for SQLite, a template file to copy)."""
    template = tmp_path_factory.mktemp("sqlite-template") / "storeroom.db"
    urls: dict[str, str] = {"sqlite": async_database_url(f"sqlite:///{template}")}
    upgrade(urls["sqlite"])
    if SERVICES_MODE:
        for backend, raw in SERVER_URLS.items():
            url = make_url(async_database_url(raw))
            try:
                asyncio.run(_recreate_server_database(backend, url))
            except Exception as exc:
                if SERVICES_MODE == "required":
                    pytest.exit(
                        f"STOREROOM_TEST_SERVICES=required but {backend} at "
                        f"{url.render_as_string(hide_password=True)} is unreachable: {exc}",
                        returncode=3,
                    )
                continue
            rendered = url.render_as_string(hide_password=False)
            upgrade(rendered)
            urls[backend] = rendered
    yield urls


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A real S3 API (moto in server mode) with an empty bucket; apps in this process find
    its credentials in the standard AWS variables."""
    os.environ.update(AWS_ENV)
    yield from moto_server(tmp_path_factory.mktemp("moto") / "moto.log")


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest, migrated_databases: dict[str, str]) -> str:
    backend: str = request.param
    if backend not in migrated_databases:
        pytest.skip(f"{backend} not enabled (STOREROOM_TEST_SERVICES={SERVICES_MODE or 'unset'})")
    return backend


@pytest.fixture
def database_url(db_backend: str, migrated_databases: dict[str, str], tmp_path: Path) -> str:
    if db_backend == "sqlite":
        template = Path(migrated_databases["sqlite"].split(":///", 1)[1])
        copy = tmp_path / "storeroom.db"
        shutil.copy(template, copy)  # keeps the 0600 a migrated database is created with
        return async_database_url(f"sqlite:///{copy}")
    url = migrated_databases[db_backend]
    asyncio.run(_empty_tables(url))
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET_KEY,
        environment="development",
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def run_in_app(client: TestClient, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run a coroutine on the app's event loop (for setup a user cannot do over HTTP)."""
    portal = client.portal
    assert portal is not None, "use inside `with TestClient(app)`"
    return portal.call(fn, *args)


def register(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/api/v1/users", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def login(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def promote_to_superuser(client: TestClient, user_id: int) -> None:
    async def promote() -> None:
        app: FastAPI = client.app  # type: ignore[assignment]
        async with app.state.sessionmaker() as session, session.begin():
            user = await session.get(User, user_id)
            assert user is not None
            user.is_superuser = True

    run_in_app(client, promote)


@pytest.fixture
def alice(client: TestClient) -> dict[str, str]:
    register(client, "alice@example.com")
    return login(client, "alice@example.com")


@pytest.fixture
def bob(client: TestClient) -> dict[str, str]:
    register(client, "bob@example.com")
    return login(client, "bob@example.com")


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    user = register(client, "admin@example.com")
    promote_to_superuser(client, user["id"])
    return login(client, "admin@example.com")


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server in the test process; override `settings` with
    `settings.model_copy(update=smtp_server.settings_update())` to send the app's email to it."""
    server = SmtpServer().start()
    yield server
    server.stop()


class FakeClock:
    """The app's clock (`app.state.clock`), moved by hand instead of by sleeping."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(app: FastAPI) -> FakeClock:
    fake = FakeClock(datetime.now(UTC))
    app.state.clock = fake
    return fake


def client_from(client: TestClient, host: str) -> TestClient:
    """Another client of the same running app, calling from address `host`."""
    other = TestClient(client.app, raise_server_exceptions=False, client=(host, 50000))
    other.portal = client.portal  # share the app's event loop and lifespan state
    return other
