"""`storeroom serve` in a process of its own, for tests that need the real thing: signals, a
database that goes away, and what is left behind when the server exits."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import TEST_SECRET_KEY


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    started: int  # clock ticks after boot: tells a process from a later one given its pid

    def alive(self) -> bool:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return False
        fields = stat.rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[19]) == self.started


def _children() -> dict[int, list[ProcessInfo]]:
    by_parent: dict[int, list[ProcessInfo]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, ...
        by_parent.setdefault(int(fields[1]), []).append(
            ProcessInfo(int(entry.name), int(fields[19]))
        )
    return by_parent


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def descendants(self) -> list[ProcessInfo]:
        """Every process started under the server, children and theirs."""
        by_parent = _children()
        found: list[ProcessInfo] = []
        parents = [self.process.pid]
        while parents:
            for child in by_parent.get(parents.pop(), []):
                found.append(child)
                parents.append(child.pid)
        return found

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False


@contextlib.contextmanager
def serve(
    workdir: Path, env: dict[str, str], *args: str, port: int | None = None
) -> Iterator[ServeProcess]:
    """Start `storeroom serve` in `workdir` (no stray .env) with `env` on top of the test
    defaults, and wait until it answers. Its output goes to `workdir/serve.log`. In its own
    session, so a test may signal its whole process group, as a service manager does. `port`
    is for a server that must know its own address beforehand (its public URL)."""
    port = port or free_port()
    log = workdir / "serve.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "storeroom.cli", "serve", "--port", str(port), *args],
            cwd=workdir,
            env={
                **os.environ,
                "STOREROOM_DATA_DIR": str(workdir / "data"),
                "STOREROOM_SECRET_KEY": TEST_SECRET_KEY,
                "STOREROOM_LOG_LEVEL": "WARNING",
                "STOREROOM_REDIS_URL": "",
                **env,
            },
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServeProcess(process, port, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, server.output()
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "storeroom serve did not start"
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
