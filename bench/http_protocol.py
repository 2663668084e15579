"""HTTP protocol benchmark: `storeroom serve`'s head-limited httptools protocol against uvicorn's
own, on GET /healthz (req/s, p99) and on a 50 MB request header (time until the server is done
with it, bytes it took, its peak RSS growth).

Run: make bench BENCH_ARGS=http_protocol   (or: .venv/bin/python -m bench http_protocol)
Needs wrk; the database is a scratch SQLite file.
"""

import os
import socket
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.common import Server, WrkResult, row, serve, storeroom_env, wrk
from storeroom.core.config import async_database_url
from storeroom.core.migrations import upgrade

SECONDS = 10
ROUNDS = 5
CONNECTIONS = 16
HEADER_BYTES = 50 * 1024 * 1024
PROTOCOLS = {
    "uvicorn httptools": "httptools",
    "storeroom head-limited": "storeroom.core.server:HeadLimitedHttpToolsProtocol",
}


@dataclass
class BigHeader:
    seconds: float
    bytes_sent: int
    status: str
    peak_rss_growth_kib: int


def _cpu_seconds(server: Server) -> float:
    """User + system CPU time of the server process: per request, it is steadier than req/s
    on a machine shared with other work."""
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _big_header(server: Server) -> BigHeader:
    """Send a 50 MB header in 64 KiB chunks; stop when the server closes or answers."""
    host, port = server.base_url.removeprefix("http://").split(":")
    peak_before = server.peak_rss_kib()
    chunk = b"a" * 65536
    sent = 0
    response = b""
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        try:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Big: ")
            while sent < HEADER_BYTES:
                connection.sendall(chunk)
                sent += len(chunk)
            connection.sendall(b"\r\nConnection: close\r\n\r\n")
            while data := connection.recv(65536):
                response += data
        except (BrokenPipeError, ConnectionResetError):
            pass
    seconds = time.monotonic() - started
    status = response.split(b"\r\n", 1)[0].decode() if response else "connection closed"
    return BigHeader(seconds, sent, status, server.peak_rss_kib() - peak_before)


def main() -> None:
    results: dict[str, list[WrkResult]] = {label: [] for label in PROTOCOLS}
    cpu_per_request_us: dict[str, list[float]] = {label: [] for label in PROTOCOLS}
    big_headers: dict[str, BigHeader] = {}
    with tempfile.TemporaryDirectory(prefix="storeroom-bench-") as workdir:
        database_url = async_database_url(f"sqlite:///{Path(workdir) / 'storeroom.db'}")
        upgrade(database_url)
        env = storeroom_env(database_url, workdir)
        with ExitStack() as stack:
            servers = {
                label: stack.enter_context(
                    serve("storeroom.main:create_app", env=env, http=protocol)
                )
                for label, protocol in PROTOCOLS.items()
            }
            for server in servers.values():
                wrk(f"{server.base_url}/healthz", seconds=2, connections=CONNECTIONS)  # warm up
            # Alternating runs spread the noise of a shared machine over both protocols.
            for _ in range(ROUNDS):
                for label, server in servers.items():
                    url = f"{server.base_url}/healthz"
                    cpu_before = _cpu_seconds(server)
                    result = wrk(url, seconds=SECONDS, connections=CONNECTIONS)
                    cpu = _cpu_seconds(server) - cpu_before
                    results[label].append(result)
                    requests = result.requests_per_second * SECONDS
                    cpu_per_request_us[label].append(cpu / requests * 1e6)
            for label, server in servers.items():
                big_headers[label] = _big_header(server)

    print(f"HTTP protocol benchmark (1 uvicorn worker, wrk -t1 -c{CONNECTIONS}, GET /healthz)")
    medians: dict[str, float] = {}
    for label, runs in results.items():
        medians[label] = statistics.median(run.requests_per_second for run in runs)
        rates = ", ".join(f"{run.requests_per_second:,.0f}" for run in runs)
        p99 = statistics.median(run.p("99%") for run in runs)
        cpu = statistics.median(cpu_per_request_us[label])
        row(f"{label} req/s (median of {rates})", f"{medians[label]:,.0f}  p99 {p99:.2f} ms")
        row(f"  {label} server CPU per request (median)", f"{cpu:.1f} us")
    baseline, limited = medians.values()
    row("  req/s ratio head-limited / uvicorn httptools", f"{limited / baseline:.1%}")
    cpu_baseline, cpu_limited = (statistics.median(v) for v in cpu_per_request_us.values())
    row("  CPU ratio head-limited / uvicorn httptools", f"{cpu_limited / cpu_baseline:.1%}")
    print("A 50 MB request header, sent in 64 KiB chunks")
    for label, big in big_headers.items():
        row(
            label,
            f"{big.status} after {big.seconds:.2f} s, {big.bytes_sent / 2**20:.1f} MiB sent, "
            f"peak RSS +{big.peak_rss_growth_kib / 1024:.1f} MiB",
        )


if __name__ == "__main__":
    main()
