"""GET /api/v1/users/me throughput with each credential: Bearer vs X-API-Key vs HTTP Basic.

One uvicorn worker on PostgreSQL (a scratch database, dropped afterwards), measured with wrk:

    .venv/bin/python -m bench.auth_credentials [--duration 10] [--connections 8]

Bearer costs a JWT check and one query, an API key a sha256 and one query, Basic a full argon2
password hash (on the hashing pool) plus the login-limit check: expect Basic to be far slower.
"""

import argparse
import asyncio
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from storeroom.core.config import async_database_url
from storeroom.core.migrations import upgrade
from storeroom.core.security import password_hash

DEFAULT_POSTGRES_URL = "postgresql://root@127.0.0.1:5432/sr_auth_bench"
EMAIL = "bench@example.com"
PASSWORD = "bench-password-123"
ME = "/api/v1/users/me"


@dataclass(frozen=True, slots=True)
class Result:
    credential: str
    requests_per_second: float
    average_latency: str
    errors: int


async def _database(url: str, *, create: bool) -> None:
    parsed = make_url(async_database_url(url))
    name = parsed.database
    assert name and name.replace("_", "").isalnum(), name
    engine = create_async_engine(
        parsed.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            if create:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_server(database_url: str, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STOREROOM_DATABASE_URL": database_url,
        "STOREROOM_DATA_DIR": str(data_dir),
        "STOREROOM_SECRET_KEY": secrets.token_urlsafe(48),
        "STOREROOM_LOG_LEVEL": "WARNING",
    }
    env.pop("STOREROOM_REDIS_URL", None)  # the default, database-backed login limiter
    command = [
        sys.executable, "-m", "uvicorn", "storeroom.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env)


def _wait_until_up(base_url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with {server.returncode}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not come up in 30 s")


def _credentials(base_url: str) -> dict[str, dict[str, str]]:
    with httpx.Client(base_url=base_url) as client:
        client.post("/api/v1/users", json={"email": EMAIL, "password": PASSWORD}).raise_for_status()
        login = client.post("/api/v1/auth/token", data={"username": EMAIL, "password": PASSWORD})
        login.raise_for_status()
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = client.post("/api/v1/users/me/api-keys", json={"name": "bench"}, headers=bearer)
        created.raise_for_status()
        credentials = {
            "Bearer": bearer,
            "API key": {"X-API-Key": created.json()["key"]},
            "Basic": {
                "Authorization": "Basic " + b64encode(f"{EMAIL}:{PASSWORD}".encode()).decode()
            },
        }
        for headers in credentials.values():
            client.get(ME, headers=headers).raise_for_status()
        return credentials


def _wrk(
    url: str, headers: dict[str, str], duration: int, connections: int
) -> tuple[float, str, int]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "60s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    latency = re.search(r"Latency\s+(\S+)", output)
    if rate is None or latency is None:
        raise SystemExit(f"cannot read wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(count) for count in re.findall(r"\d+", socket_errors.group(1)))
    return float(rate.group(1)), latency.group(1), errors


def _password_check_milliseconds() -> float:
    """One argon2 verification in this process, for scale."""
    hashed = password_hash.hash(PASSWORD)
    started = time.perf_counter()
    for _ in range(5):
        password_hash.verify(PASSWORD, hashed)
    return (time.perf_counter() - started) / 5 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per credential")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("STOREROOM_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="scratch database (dropped and recreated)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    database_url = async_database_url(args.postgres_url)
    asyncio.run(_database(database_url, create=True))
    upgrade(database_url)
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        server = _start_server(database_url, Path(data_dir), port)
        try:
            _wait_until_up(base_url, server)
            results = []
            for credential, headers in _credentials(base_url).items():
                _wrk(base_url + ME, headers, 2, args.connections)  # warm-up
                rate, latency, errors = _wrk(
                    base_url + ME, headers, args.duration, args.connections
                )
                results.append(Result(credential, rate, latency, errors))
        finally:
            server.terminate()
            server.wait(timeout=10)
    asyncio.run(_database(database_url, create=False))

    hash_ms = _password_check_milliseconds()
    bearer = results[0].requests_per_second
    print(
        f"GET {ME}: 1 uvicorn worker, PostgreSQL, wrk -t1 -c{args.connections} "
        f"-d{args.duration}s, {os.cpu_count()} CPUs (shared machine: numbers are noisy)"
    )
    print(f"one argon2 password check here, single-threaded: {hash_ms:.0f} ms")
    print(f"{'credential':<10} {'req/s':>9} {'avg latency':>12} {'vs Bearer':>10} {'errors':>7}")
    for result in results:
        print(
            f"{result.credential:<10} {result.requests_per_second:>9.1f} "
            f"{result.average_latency:>12} {result.requests_per_second / bearer:>9.2f}x "
            f"{result.errors:>7}"
        )


if __name__ == "__main__":
    main()
