"""A bounded schemathesis run over the OpenAPI schema against a live server (uvicorn on a free
port, SQLite), as a superuser and as an anonymous caller, and as a superuser on PostgreSQL when
it is enabled: no generated request may produce a 5xx, an undocumented status, or a response
that breaks the schema. Generation leans towards odd but valid-looking input that once gave
500s (tests/schemathesis_hooks.py): datetimes UTC cannot hold in every run, strings with NUL in
the PostgreSQL one."""

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from storeroom.core.config import Settings, async_database_url
from storeroom.main import create_app
from storeroom.users.models import User
from tests.conftest import PASSWORD, TEST_SECRET_KEY, _empty_tables

pytestmark = pytest.mark.schemathesis

MAX_EXAMPLES = os.environ.get("STOREROOM_SCHEMATHESIS_EXAMPLES", "30")
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "allow_header_conformance",
        "ignored_auth",
        "use_after_free",
    ]
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _serve(database_url: str, data_dir: Path) -> Iterator[str]:
    """The app under uvicorn on a free port, in a thread; yields its base URL."""
    # Every operation is also tried with bad credentials; with enough operations those
    # failures would reach the failed-login limit and turn the expected 401s into 429s.
    app = create_app(
        Settings(
            database_url=database_url,
            data_dir=data_dir,
            secret_key=TEST_SECRET_KEY,
            login_max_failures=1_000_000,
            # Likewise registrations and recoveries, limited per client address.
            registration_max_per_ip=1_000_000,
            password_recovery_max_per_ip=1_000_000,
            password_recovery_max_per_email=1_000_000,
        )
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, migrated_databases: dict[str, str]
) -> Iterator[tuple[str, str]]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    database = workdir / "storeroom.db"
    shutil.copyfile(Path(migrated_databases["sqlite"].split(":///", 1)[1]), database)
    url = async_database_url(f"sqlite:///{database}")
    with _serve(url, workdir / "data") as base_url:
        yield base_url, url


@pytest.fixture(scope="module")
def postgresql_live_server(
    tmp_path_factory: pytest.TempPathFactory, migrated_databases: dict[str, str]
) -> Iterator[tuple[str, str]]:
    if "postgresql" not in migrated_databases:
        pytest.skip("postgresql not enabled (set STOREROOM_TEST_SERVICES)")
    url = migrated_databases["postgresql"]
    asyncio.run(_empty_tables(url))
    with _serve(url, tmp_path_factory.mktemp("schemathesis-postgresql") / "data") as base_url:
        yield base_url, url


def _superuser_token(base_url: str, database_url: str) -> str:
    with httpx.Client(base_url=base_url) as client:
        created = client.post(
            "/api/v1/users", json={"email": "fuzz@example.com", "password": PASSWORD}
        )
        assert created.status_code == 201

        async def promote() -> None:
            engine = create_async_engine(database_url)
            async with engine.begin() as connection:
                await connection.execute(
                    update(User).where(User.id == created.json()["id"]).values(is_superuser=True)
                )
            await engine.dispose()

        asyncio.run(promote())
        token: str = client.post(
            "/api/v1/auth/token", data={"username": "fuzz@example.com", "password": PASSWORD}
        ).json()["access_token"]
    return token


@pytest.fixture(scope="module")
def superuser_token(live_server: tuple[str, str]) -> str:
    return _superuser_token(*live_server)


@pytest.fixture(scope="module")
def postgresql_superuser_token(postgresql_live_server: tuple[str, str]) -> str:
    return _superuser_token(*postgresql_live_server)


def _summary(output: str) -> str:
    """The SUMMARY block of schemathesis' report, for the test log."""
    return output[output.rfind("SUMMARY") :].strip() if "SUMMARY" in output else output[-2000:]


def _schemathesis(
    base_url: str, tmp_path: Path, *extra: str, nul: bool = False
) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        "20261125",
        "--request-timeout",
        "30",
        # Deleting the fuzzing account would leave the rest of the run unauthenticated.
        "--exclude-operation-id",
        "delete_own_account",
        # Event streams stay open until the client leaves (tests/events covers them).
        "--exclude-path-regex",
        "/events$",
        *extra,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        check=False,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": str(HOOKS),
            "STOREROOM_SCHEMATHESIS_NUL": "1" if nul else "0",
        },
    )


def test_api_conforms_to_its_schema_as_a_superuser(
    live_server: tuple[str, str],
    superuser_token: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = _schemathesis(
        live_server[0], tmp_path, "--header", f"Authorization: Bearer {superuser_token}"
    )
    with capsys.disabled():
        print(f"\nschemathesis (superuser):\n{_summary(result.stdout)}")
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "Tested:" in result.stdout


def test_api_conforms_to_its_schema_anonymously(
    live_server: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _schemathesis(live_server[0], tmp_path)
    with capsys.disabled():
        print(f"\nschemathesis (anonymous):\n{_summary(result.stdout)}")
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]


def test_api_conforms_to_its_schema_on_postgresql(
    postgresql_live_server: tuple[str, str],
    postgresql_superuser_token: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """PostgreSQL refuses text the other databases store (NUL), so strings with NUL go there;
    a superuser reaches every operation that stores or searches text."""
    result = _schemathesis(
        postgresql_live_server[0],
        tmp_path,
        "--header",
        f"Authorization: Bearer {postgresql_superuser_token}",
        # Generated credentials would turn most requests into 401s before any query runs; the
        # SQLite runs try those.
        "--generation-with-security-parameters",
        "false",
        nul=True,
    )
    with capsys.disabled():
        print(f"\nschemathesis (superuser, postgresql):\n{_summary(result.stdout)}")
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "Tested:" in result.stdout
