"""Shared benchmark plumbing: a scratch PostgreSQL database, a real uvicorn server in its own
process, and wrk runs parsed into numbers."""

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from storeroom.core.config import async_database_url
from storeroom.core.migrations import upgrade

BENCH_POSTGRES_URL = os.environ.get(
    "STOREROOM_BENCH_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/storeroom_bench"
)
BENCH_MARIADB_URL = os.environ.get(
    "STOREROOM_BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306/storeroom_bench"
)
BENCH_SECRET_KEY = "bench-only-" + os.urandom(16).hex()
PASSWORD = "bench-password-1"


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    return wrk


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _recreate(url: str) -> None:
    parsed = make_url(url)
    engine = create_async_engine(
        parsed.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    async with engine.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        await connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    await engine.dispose()


def fresh_postgres_database(url: str = BENCH_POSTGRES_URL) -> str:
    """Drop, recreate and migrate the benchmark database; return its async URL."""
    async_url = async_database_url(url)
    asyncio.run(_recreate(async_url))
    upgrade(async_url)
    return async_url


async def _recreate_mariadb(url: str) -> None:
    parsed = make_url(url)
    engine = create_async_engine(parsed.set(database="mysql"), poolclass=NullPool)
    async with engine.connect() as connection:
        await connection.execute(text(f"DROP DATABASE IF EXISTS `{parsed.database}`"))
        await connection.execute(
            text(
                f"CREATE DATABASE `{parsed.database}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        )
    await engine.dispose()


def fresh_database(backend: str, workdir: Path) -> str:
    """A migrated scratch database on `backend` (sqlite, postgresql or mariadb); its async URL.
    SQLite's file lives in `workdir`."""
    if backend == "postgresql":
        return fresh_postgres_database()
    if backend == "mariadb":
        url = async_database_url(BENCH_MARIADB_URL)
        asyncio.run(_recreate_mariadb(url))
        upgrade(url)
        return url
    url = async_database_url(f"sqlite:///{workdir / 'storeroom.db'}")
    upgrade(url)
    return url


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]

    def rss_kib(self) -> int:
        return _status_kib(self.process.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return _status_kib(self.process.pid, "VmHWM")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


@contextmanager
def serve(
    app: str,
    env: dict[str, str] | None = None,
    factory: bool = True,
    http: str = "auto",
    workers: int = 1,
) -> Iterator[Server]:
    """Run `app` under uvicorn (one worker unless `workers` says more, uvloop + httptools
    unless `http` names another protocol class) in its own process."""
    port = free_port()
    log_fd, log_name = tempfile.mkstemp(prefix="storeroom-bench-", suffix=".log")
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
        "--http",
        http,
    ]
    if factory:
        command.append("--factory")
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=log_fd, stderr=subprocess.STDOUT
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {log_name}")
            time.sleep(0.1)
        yield Server(base_url, process)
    finally:
        os.close(log_fd)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def storeroom_env(database_url: str, data_dir: str) -> dict[str, str]:
    return {
        "STOREROOM_DATABASE_URL": database_url,
        "STOREROOM_SECRET_KEY": BENCH_SECRET_KEY,
        "STOREROOM_DATA_DIR": data_dir,
        "STOREROOM_ENVIRONMENT": "production",
        "STOREROOM_LOG_LEVEL": "WARNING",
        "STOREROOM_REDIS_URL": "",  # the default, database-backed login limiter
    }


@dataclass
class WrkResult:
    requests_per_second: float
    latency_ms: dict[str, float]  # "50%", "90%", "99%", ...
    non_2xx: int
    errors: str

    def p(self, percentile: str) -> float:
        return self.latency_ms[percentile]


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latency = {
        match.group(1) + "%": _to_ms(match.group(2))
        for match in re.finditer(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", output, re.MULTILINE)
    }
    non_2xx_match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors_match = re.search(r"Socket errors:.*", output)
    return WrkResult(
        requests_per_second=rps,
        latency_ms=latency,
        non_2xx=int(non_2xx_match.group(1)) if non_2xx_match else 0,
        errors=errors_match.group(0) if errors_match else "",
    )


def wrk_command(
    url: str,
    *,
    seconds: int,
    connections: int,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    script: str | None = None,
) -> list[str]:
    command = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script:
        command += ["-s", script]
    return [*command, url]


def wrk(url: str, **options: object) -> WrkResult:
    command = wrk_command(url, **options)  # type: ignore[arg-type]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def register_and_login(base_url: str, email: str = "bench@example.com") -> str:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.post("/api/v1/users", json={"email": email, "password": PASSWORD})
        response = client.post("/api/v1/auth/token", data={"username": email, "password": PASSWORD})
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token


def row(label: str, value: str) -> None:
    print(f"  {label:<58} {value}")
