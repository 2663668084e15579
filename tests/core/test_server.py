"""`storeroom serve` as a client meets it: a real server process, spoken to over raw sockets,
so the HTTP protocol's limits on a request's head are what is tested."""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SECRET_KEY

HEADER_CHUNK = 64 * 1024


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int

    def memory_kib(self, field: str) -> int:
        """VmRSS (now) or VmHWM (peak) of the server process."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1))

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_server(workdir: Path, template: Path, *args: str, **env: str) -> Iterator[Server]:
    database = workdir / "storeroom.db"
    shutil.copyfile(template, database)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "storeroom.cli", "serve", "--port", str(port), *args],
        cwd=workdir,  # no stray .env from the developer's checkout
        env={
            **os.environ,
            "STOREROOM_DATA_DIR": str(workdir / "data"),
            "STOREROOM_DATABASE_URL": f"sqlite:///{database}",
            "STOREROOM_SECRET_KEY": TEST_SECRET_KEY,
            "STOREROOM_LOG_LEVEL": "WARNING",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "storeroom serve did not start"
        time.sleep(0.1)
    try:
        yield Server(process, port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _template(migrated_databases: dict[str, str]) -> Path:
    return Path(migrated_databases["sqlite"].split(":///", 1)[1])


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, migrated_databases: dict[str, str]
) -> Iterator[Server]:
    yield from _start_server(tmp_path_factory.mktemp("serve"), _template(migrated_databases))


def _exchange(server: Server, request: bytes) -> bytes:
    """Send a request whole and read until the server closes."""
    with server.connect() as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _get_healthz(*headers: bytes) -> bytes:
    return b"\r\n".join(
        [b"GET /healthz HTTP/1.1", b"Host: 127.0.0.1", *headers, b"Connection: close", b"", b""]
    )


def test_a_50_mb_header_is_cut_off_early_and_costs_no_memory(server: Server) -> None:
    assert _status(_exchange(server, _get_healthz())) == 200  # warm: imports, first request
    peak_before = server.memory_kib("VmHWM")
    header_size = 50 * 1024 * 1024
    chunk = b"a" * HEADER_CHUNK
    sent = 0
    response = b""
    started = time.monotonic()
    with server.connect() as connection:
        try:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            while sent < header_size:
                connection.sendall(chunk)
                sent += len(chunk)
            connection.sendall(b"\r\nConnection: close\r\n\r\n")
            while data := connection.recv(65536):
                response += data
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed on us: what a client sending a head this size should see
        if not response:
            # The 431 may be lost to the reset that the server's unread bytes provoke.
            with contextlib.suppress(ConnectionResetError):
                response = connection.recv(65536)
    elapsed = time.monotonic() - started

    assert sent < header_size, f"the server took the whole header ({response[:100]!r})"
    assert response == b"" or _status(response) == 431
    assert elapsed < 5
    growth_kib = server.memory_kib("VmHWM") - peak_before
    assert growth_kib < 5 * 1024, f"server peak RSS grew by {growth_kib} KiB"
    assert _status(_exchange(server, _get_healthz())) == 200


def test_too_many_headers_is_431_in_the_error_shape(server: Server) -> None:
    headers = [b"X-Many-%d: 1" % number for number in range(500)]
    response = _exchange(server, _get_healthz(*headers))
    assert _status(response) == 431
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert body == (
        b'{"detail":"Request header fields too large","code":"request_header_fields_too_large"}'
    )


def test_a_large_head_arriving_in_one_read_is_431(server: Server) -> None:
    response = _exchange(server, _get_healthz(b"Cookie: " + b"c" * 100_000))
    assert _status(response) == 431


def test_an_8_kb_cookie_is_allowed(server: Server) -> None:
    response = _exchange(server, _get_healthz(b"Cookie: session=" + b"c" * 8192))
    assert _status(response) == 200


def test_a_body_and_a_pipelined_request_do_not_count_as_head(server: Server) -> None:
    body = b"x" * (300 * 1024)
    with server.connect() as connection:
        connection.sendall(
            b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body[: -80 * 1024]
        )
        time.sleep(0.2)
        # One read now holds the last 80 KiB of the first request's body and the start of the
        # second one's head, which the next read completes: none of those 80 KiB is that head's.
        connection.sendall(body[-80 * 1024 :] + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.2)
        connection.sendall(b"Connection: close\r\n\r\n")
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    assert [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)] == [405, 200]


@pytest.fixture
def server_with_workers(tmp_path: Path, migrated_databases: dict[str, str]) -> Iterator[Server]:
    yield from _start_server(
        tmp_path,
        _template(migrated_databases),
        "--workers",
        "2",
        STOREROOM_MAX_HEADER_BYTES="4096",
    )


def test_the_header_limit_setting_reaches_worker_processes(server_with_workers: Server) -> None:
    # With --workers the parent only supervises: the processes that answer are started afresh
    # and must read the limit from the environment themselves.
    for _ in range(3):
        allowed = _exchange(server_with_workers, _get_healthz(b"Cookie: " + b"c" * 2048))
        assert _status(allowed) == 200
        refused = _exchange(server_with_workers, _get_healthz(b"Cookie: " + b"c" * 8192))
        assert _status(refused) == 431
