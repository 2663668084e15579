"""Rate limits with Redis configured but down: logins, registrations and recoveries keep working
on the database's counters (never a 500), a warning says so, /readyz shows it, and Redis is used
again once it answers. Each test runs its own redis-server on a free port, started and stopped
at will (skipped where redis-server is not installed)."""

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.auth.conftest import MAX_FAILURES, failed_login
from tests.conftest import PASSWORD, register

REDIS_SERVER = shutil.which("redis-server")
DEGRADED = "database (redis unreachable)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A throwaway redis-server, stopped and started again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=1) as client:
                    client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def stored_keys(self) -> list[bytes]:
        with redis.Redis(port=self.port) as client:
            return list(client.keys("*"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def settings(settings: Settings, redis_server: RedisServer) -> Settings:
    return settings.model_copy(update={"redis_url": redis_server.url})


def _rate_limits(client: TestClient) -> str:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    rate_limits: str = response.json()["rate_limits"]
    return rate_limits


def test_limits_hold_on_the_database_while_redis_is_down(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="storeroom.auth.rate_limit"):
        register(client, "alice@example.com")
        assert [failed_login(client, "alice@example.com") for _ in range(MAX_FAILURES)] == [
            401
        ] * MAX_FAILURES
        refused = client.post(
            "/api/v1/auth/token", data={"username": "alice@example.com", "password": PASSWORD}
        )
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        assert _rate_limits(client) == DEGRADED
    warnings = [record for record in caplog.records if "Redis is unreachable" in record.message]
    assert len(warnings) == 1  # once per outage, not once per request


def test_redis_is_used_again_once_it_answers(client: TestClient, redis_server: RedisServer) -> None:
    register(client, "alice@example.com")
    assert failed_login(client, "alice@example.com") == 401
    assert _rate_limits(client) == DEGRADED

    redis_server.start()
    assert _rate_limits(client) == "redis"
    assert failed_login(client, "alice@example.com") == 401
    assert any(b"login-failures:account:" in key for key in redis_server.stored_keys())

    redis_server.stop()
    assert failed_login(client, "alice@example.com") == 401
    assert _rate_limits(client) == DEGRADED
