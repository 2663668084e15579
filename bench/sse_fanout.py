"""SSE fan-out: 1,000 clients streaming GET /api/v1/events from one `storeroom serve` process
while a worker-like process publishes 100 events 50 ms apart, on the embedded default (SQLite
is the event log) and on Redis.

    .venv/bin/python -m bench sse_fanout
    .venv/bin/python -m bench.sse_fanout [--backend both|sqlite|redis] [--clients 1000]
        [--events 100] [--interval 0.05] [--client-processes 2]

Three kinds of process, so none measures itself:
- the server: `storeroom serve` (one worker, STOREROOM_EMBEDDED_WORKER=false, log level WARNING)
  on a fresh data dir; one user, whose Bearer token every client uses;
- the clients (`--client-processes` of them): raw asyncio protocols writing a bare HTTP/1.1 GET
  and decoding the chunked body and the SSE lines by hand, timestamping each read;
- the publisher: built the way a Celery worker builds its environment (jobs/tasks.py
  `_worker_env`: an unpooled engine, its own event log, a sessionmaker carrying it); each event
  is a real `items_service.create` and `core.db.commit`, whose after-commit hook publishes the
  `item.created` event. The item's name carries time.time() from just before the transaction:
  a client's delivery latency is its receive time minus that (same machine, same clock).

Prints deliveries received / expected, delivery latency p50/p90/p99/max over every (client,
event) pair (the issue's target: p99 < 100 ms), the server's RSS idle and with every client
connected (and per connection), and the server's CPU seconds over the publish phase.
STOREROOM_BENCH_REDIS_URL (default redis://127.0.0.1:6379/0) names the Redis; each run uses its
own key prefix and deletes its keys afterwards.
"""

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import resource
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, cast

import httpx

from bench.common import free_port, register_and_login, row
from storeroom.main import GC_THRESHOLDS

REDIS_URL = os.environ.get("STOREROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO_ROOT = Path(__file__).resolve().parents[1]
NAME_PREFIX = "sse-bench"
TARGET_P99_MS = 100.0
CONNECT_CONCURRENCY = 100  # connections being opened at once, per client process
CONNECT_TIMEOUT_SECONDS = 120.0
DRAIN_SECONDS = 10.0  # after the last event: how long clients may still wait for deliveries
SETTLE_SECONDS = 2.0


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/{pid}/status")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_queue_seconds(pid: int) -> float:
    """How long the process's main thread (the server's event loop) was runnable but waiting
    for a CPU: on a shared machine, the part of the latency that is not the server's doing."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def _machine_busy_seconds() -> float:
    """CPU time used by every process on the machine (all cores), from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest rank of an already sorted list."""
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def _send_line(process: "subprocess.Popen[str]", line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


def _read_message(process: "subprocess.Popen[str]", what: str) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the {what} process ended (exit code {process.wait()})")
    message: dict[str, Any] = json.loads(line)
    return message


# --- the clients ----------------------------------------------------------------------------


class _Tally:
    """What one client process saw, over all its streams."""

    def __init__(self, streams: int, events: int) -> None:
        self.streams = streams
        self.events = events
        self.complete = 0
        self.all_complete = asyncio.get_running_loop().create_future()
        self.publish_times: dict[bytes, tuple[int, float]] = {}  # event id -> (number, time)
        self.latencies_ms: list[float] = []
        # event number -> [first receive, last receive, deliveries]
        self.per_event: dict[int, list[float]] = {}
        self.duplicates = 0
        self.out_of_order = 0
        self.foreign = 0  # events that are not the benchmark's items
        self.failures: dict[str, int] = {}
        self.closed_early = 0

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def delivered(self, stream: "_Stream", event_id: bytes, data: bytes, received: float) -> None:
        published = self.publish_times.get(event_id)
        if published is None:
            envelope = json.loads(data)
            name = str(envelope.get("data", {}).get("name", ""))
            if envelope.get("type") != "item.created" or not name.startswith(NAME_PREFIX):
                self.foreign += 1
                return
            _, number_text, moment_text = name.split(" ")
            published = self.publish_times[event_id] = (int(number_text), float(moment_text))
        order = tuple(int(part) for part in event_id.split(b"-"))
        if event_id in stream.seen:
            self.duplicates += 1
            return
        if order <= stream.last_order:
            self.out_of_order += 1
        stream.seen.add(event_id)
        stream.last_order = order
        number, moment = published
        self.latencies_ms.append((received - moment) * 1000)
        seen = self.per_event.get(number)
        if seen is None:
            self.per_event[number] = [received, received, 1]
        else:
            seen[0] = min(seen[0], received)
            seen[1] = max(seen[1], received)
            seen[2] += 1
        if len(stream.seen) == self.events:
            self.complete += 1
            if self.complete == self.streams and not self.all_complete.done():
                self.all_complete.set_result(None)


class _Stream(asyncio.Protocol):
    """One SSE client: a bare HTTP/1.1 GET, then the chunked body decoded by hand."""

    def __init__(self, request: bytes, tally: _Tally) -> None:
        self.request = request
        self.tally = tally
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.raw = b""  # received, not yet decoded (the response head or chunk framing)
        self.head_done = False
        self.chunk_left = 0
        self.skip = 0  # the CRLF after a chunk
        self.text = b""  # decoded event-stream bytes not yet split into events
        self.seen: set[bytes] = set()
        self.last_order: tuple[int, ...] = ()
        self.ready = False  # the stream's first bytes came
        self.stopping = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def _fail(self, reason: str) -> None:
        if not self.started.done():
            self.started.set_exception(RuntimeError(reason))
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        received = time.time()
        self.raw += data
        if not self.head_done:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.raw = self.raw[:end], self.raw[end + 4 :]
            status = head.split(b"\r\n", 1)[0].decode(errors="replace")
            if " 200 " not in status:
                self._fail(status)
                return
            if b"transfer-encoding: chunked" not in head.lower():
                self._fail("not chunked")
                return
            self.head_done = True
        while self.raw:
            if self.skip:
                taken = min(self.skip, len(self.raw))
                self.raw = self.raw[taken:]
                self.skip -= taken
            elif self.chunk_left:
                piece = self.raw[: self.chunk_left]
                self.raw = self.raw[len(piece) :]
                self.chunk_left -= len(piece)
                self.text += piece
                if not self.chunk_left:
                    self.skip = 2
            else:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(self.raw[:line_end].split(b";")[0], 16)
                self.raw = self.raw[line_end + 2 :]
                if size == 0:  # the server ended the stream
                    break
                self.chunk_left = size
        while (end := self.text.find(b"\n\n")) >= 0:
            block, self.text = self.text[:end], self.text[end + 2 :]
            self._event(block, received)

    def _event(self, block: bytes, received: float) -> None:
        event_id = data = None
        for line in block.split(b"\n"):
            if line.startswith(b"id: "):
                event_id = line[4:]
            elif line.startswith(b"data: "):
                data = line[6:]
            elif line.startswith(b"retry:") and not self.ready:
                self.ready = True
                if not self.started.done():
                    self.started.set_result(None)
        if event_id is not None and data is not None:
            self.tally.delivered(self, event_id, data, received)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(RuntimeError(f"connection lost: {exc!r}"))
        elif not self.stopping:
            self.tally.closed_early += 1


async def _stdin_line(loop: asyncio.AbstractEventLoop) -> str:
    return await loop.run_in_executor(None, sys.stdin.readline)


async def _clients(port: int, streams: int, events: int) -> None:
    loop = asyncio.get_running_loop()
    tally = _Tally(streams, events)
    token = os.environ["STOREROOM_BENCH_TOKEN"]
    request = (
        f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    opening = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened: list[_Stream] = []

    async def open_one() -> None:
        async with opening:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    _, stream = await loop.create_connection(
                        lambda: _Stream(request, tally), "127.0.0.1", port
                    )
                    opened.append(stream)
                    await stream.started
            except Exception as exc:
                tally.fail(str(exc) or type(exc).__name__)

    began = time.monotonic()
    await asyncio.gather(*(open_one() for _ in range(streams)))
    connected = sum(1 for stream in opened if stream.ready)
    print(
        json.dumps(
            {
                "connected": connected,
                "seconds": time.monotonic() - began,
                "failures": tally.failures,
            }
        ),
        flush=True,
    )
    tally.streams = connected
    if connected == 0 and not tally.all_complete.done():
        tally.all_complete.set_result(None)
    stop = asyncio.ensure_future(_stdin_line(loop))
    await asyncio.wait([tally.all_complete, stop], return_when=asyncio.FIRST_COMPLETED)
    for stream in opened:
        stream.stopping = True
        if stream.transport is not None:
            stream.transport.close()
    print(
        json.dumps(
            {
                "latencies_ms": tally.latencies_ms,
                "per_event": tally.per_event,
                "duplicates": tally.duplicates,
                "out_of_order": tally.out_of_order,
                "foreign": tally.foreign,
                "closed_early": tally.closed_early,
                "incomplete": connected - tally.complete,
            }
        ),
        flush=True,
    )
    os._exit(0)  # the thread still reading stdin would hold the process up


def _run_clients(options: argparse.Namespace) -> None:
    _raise_fd_limit()
    # The clients take their receive timestamps: collect cycles as rarely as the server does
    # (storeroom.main.GC_THRESHOLDS), or a client's own full GC pass shows up as latency.
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_clients(options.port, options.clients, options.events))
    else:
        uvloop.run(_clients(options.port, options.clients, options.events))


# --- the publisher --------------------------------------------------------------------------


async def _publish(owner_id: int, events: int, interval: float) -> None:
    import storeroom.jobs.tasks  # noqa: F401  (a worker's modules: every table it maps)
    from storeroom.core.config import Settings
    from storeroom.core.db import commit, create_engine, create_sessionmaker
    from storeroom.events.log import create_event_log, session_info
    from storeroom.items import service as items_service
    from storeroom.items.schemas import ItemCreate

    settings = Settings()
    engine = create_engine(settings, pooled=False)
    event_log = create_event_log(settings)
    sessionmaker = create_sessionmaker(engine, info=session_info(event_log))
    loop = asyncio.get_running_loop()
    try:
        # Warm the code paths with an item that is rolled back: it publishes nothing.
        async with sessionmaker() as session:
            warm_up = ItemCreate(name=f"{NAME_PREFIX} warm-up", price=Decimal("1.00"))
            await items_service.create(session, owner_id, warm_up)
            await session.rollback()
        print(json.dumps({"ready": True}), flush=True)
        await _stdin_line(loop)
        published: list[tuple[float, float]] = []
        start = time.time()
        for number in range(events):
            await asyncio.sleep(max(0.0, start + number * interval - time.time()))
            moment = time.time()
            item = ItemCreate(name=f"{NAME_PREFIX} {number} {moment:.6f}", price=Decimal("1.00"))
            async with sessionmaker() as session:
                await items_service.create(session, owner_id, item)
                await commit(session)
            published.append((moment, time.time()))
        print(json.dumps({"published": published}), flush=True)
    finally:
        try:
            await event_log.close()
        finally:
            await engine.dispose()


def _run_publisher(options: argparse.Namespace) -> None:
    _raise_fd_limit()
    asyncio.run(_publish(options.owner_id, options.events, options.interval))


# --- the run --------------------------------------------------------------------------------


@dataclass
class Run:
    backend: str
    clients: int
    events: int
    interval: float
    connected: int = 0
    connect_seconds: float = 0.0
    connect_failures: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    duplicates: int = 0
    out_of_order: int = 0
    foreign: int = 0
    closed_early: int = 0
    incomplete: int = 0
    first_after_commit_ms: list[float] = field(default_factory=list)
    last_after_commit_ms: list[float] = field(default_factory=list)
    commit_ms: list[float] = field(default_factory=list)
    publish_seconds: float = 0.0
    rss_idle_kib: int = 0
    rss_connected_kib: int = 0
    rss_after_kib: int = 0
    rss_peak_kib: int = 0
    idle_cpu_per_second: float = 0.0
    server_cpu_seconds: float = 0.0
    server_run_queue_seconds: float = 0.0
    publisher_cpu_seconds: float = 0.0
    machine_busy_seconds: float = 0.0
    load_average: float = 0.0
    client_cpu_seconds: list[float] = field(default_factory=list)
    client_run_queue_seconds: list[float] = field(default_factory=list)
    phase_seconds: float = 0.0
    stop_seconds: float = 0.0
    server_log_problems: list[str] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return self.clients * self.events


def _environment(data_dir: Path, redis_prefix: str | None) -> dict[str, str]:
    """The server's and the publisher's environment: ours only, none inherited."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("STOREROOM_")}
    python_path = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    env.update(
        {
            "PYTHONPATH": ":".join(python_path),
            "STOREROOM_DATA_DIR": str(data_dir),
            "STOREROOM_DATABASE_URL": f"sqlite:///{data_dir / 'storeroom.db'}",
            "STOREROOM_SECRET_KEY": "bench-only-" + secrets.token_hex(24),
            "STOREROOM_LOG_LEVEL": "WARNING",
            "STOREROOM_EMBEDDED_WORKER": "false",
        }
    )
    if redis_prefix is not None:
        env["STOREROOM_REDIS_URL"] = REDIS_URL
        env["STOREROOM_REDIS_KEY_PREFIX"] = redis_prefix
    return env


class _Processes:
    """Every process a run starts, each in its own session, ended by its id on the way out."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[Any]] = []

    def start(self, command: list[str], **options: Any) -> "subprocess.Popen[Any]":
        process = subprocess.Popen(command, start_new_session=True, **options)
        self.started.append(process)
        return process

    def end_all(self) -> None:
        """SIGTERM: the server shuts down gracefully (its streams end), the benchmark's own
        processes at once (one waiting on its stdin in a thread would not exit on SIGINT)."""
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # its group: whatever it left behind
            process.wait()


@contextlib.contextmanager
def _processes() -> Iterator[_Processes]:
    processes = _Processes()
    try:
        yield processes
    finally:
        processes.end_all()


def _wait_healthy(base_url: str, server: "subprocess.Popen[bytes]", log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _delete_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _redis_reachable() -> bool:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _child(role: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "bench.sse_fanout", "--role", role, *arguments]


def run(backend: str, options: argparse.Namespace) -> Run:
    result = Run(backend, options.clients, options.events, options.interval)
    redis_prefix = f"storeroom-bench-sse-{secrets.token_hex(4)}:" if backend == "redis" else None
    try:
        with (
            tempfile.TemporaryDirectory(prefix="storeroom-bench-sse-") as workdir,
            _processes() as processes,
        ):
            _measure(result, Path(workdir), redis_prefix, processes, options)
            server = processes.started[0]
            began = time.monotonic()
            processes.end_all()
            result.stop_seconds = time.monotonic() - began
            if server.returncode not in (0, -signal.SIGTERM):
                result.server_log_problems.append(f"exit code {server.returncode}")
            log = (Path(workdir) / "server.log").read_text(errors="replace").splitlines()
            result.server_log_problems += [line for line in log if line.strip()]
    finally:
        if redis_prefix is not None:
            _delete_redis_keys(redis_prefix)
    return result


def _measure(
    result: Run,
    workdir: Path,
    redis_prefix: str | None,
    processes: _Processes,
    options: argparse.Namespace,
) -> None:
    data_dir = workdir / "data"
    env = _environment(data_dir, redis_prefix)
    storeroom = [sys.executable, "-m", "storeroom.cli"]
    subprocess.run([*storeroom, "migrate"], env=env, cwd=workdir, check=True, capture_output=True)
    port = free_port()
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        server = processes.start(
            [*storeroom, "serve", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    _wait_healthy(base_url, server, log_path)
    token = register_and_login(base_url, "sse-fanout@example.com")
    me = httpx.get(
        f"{base_url}/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    me.raise_for_status()
    owner_id = int(me.json()["id"])

    publisher = processes.start(
        _child(
            "publisher",
            f"--owner-id={owner_id}",
            f"--events={options.events}",
            f"--interval={options.interval}",
        ),
        env=env,
        cwd=workdir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    _read_message(publisher, "publisher")  # ready

    time.sleep(SETTLE_SECONDS)
    result.rss_idle_kib = _status_kib(server.pid, "VmRSS")

    shares = [
        options.clients // options.client_processes
        + (1 if number < options.clients % options.client_processes else 0)
        for number in range(options.client_processes)
    ]
    client_env = {**env, "STOREROOM_BENCH_TOKEN": token}
    clients = [
        processes.start(
            _child("clients", f"--port={port}", f"--clients={share}", f"--events={options.events}"),
            env=client_env,
            cwd=workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
        if share
    ]
    for client in clients:
        ready = _read_message(client, "clients")
        result.connected += ready["connected"]
        result.connect_seconds = max(result.connect_seconds, ready["seconds"])
        for reason, count in ready["failures"].items():
            result.connect_failures[reason] = result.connect_failures.get(reason, 0) + count

    idle_cpu_before = _cpu_seconds(server.pid)
    time.sleep(SETTLE_SECONDS)
    result.idle_cpu_per_second = (_cpu_seconds(server.pid) - idle_cpu_before) / SETTLE_SECONDS
    result.rss_connected_kib = _status_kib(server.pid, "VmRSS")

    cpu_before = _cpu_seconds(server.pid)
    run_queue_before = _run_queue_seconds(server.pid)
    publisher_cpu_before = _cpu_seconds(publisher.pid)
    machine_before = _machine_busy_seconds()
    clients_cpu_before = [_cpu_seconds(client.pid) for client in clients]
    clients_run_queue_before = [_run_queue_seconds(client.pid) for client in clients]
    began = time.monotonic()
    _send_line(publisher, "go")
    published: list[list[float]] = _read_message(publisher, "publisher")["published"]
    with contextlib.suppress(OSError):  # a zombie until waited for: its figures stay readable
        result.publisher_cpu_seconds = _cpu_seconds(publisher.pid) - publisher_cpu_before
    result.publish_seconds = published[-1][1] - published[0][0] if published else 0.0
    result.commit_ms = [(committed - moment) * 1000 for moment, committed in published]

    deadline = time.monotonic() + DRAIN_SECONDS
    per_event: dict[int, list[float]] = {}
    for client in clients:
        assert client.stdout is not None
        waiting: list[IO[str]] = [client.stdout]
        if not select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))[0]:
            _send_line(client, "stop")
        report = _read_message(client, "clients")
        result.latencies_ms += report["latencies_ms"]
        for key in ("duplicates", "out_of_order", "foreign", "closed_early", "incomplete"):
            setattr(result, key, getattr(result, key) + report[key])
        for number, (first, last, count) in report["per_event"].items():
            seen = per_event.setdefault(int(number), [first, last, 0])
            seen[0], seen[1], seen[2] = min(seen[0], first), max(seen[1], last), seen[2] + count
    result.phase_seconds = time.monotonic() - began
    publisher.wait(timeout=30)  # it ends by itself once it has closed its connections
    result.server_cpu_seconds = _cpu_seconds(server.pid) - cpu_before
    result.server_run_queue_seconds = _run_queue_seconds(server.pid) - run_queue_before
    result.machine_busy_seconds = _machine_busy_seconds() - machine_before
    result.load_average = os.getloadavg()[0]
    result.client_cpu_seconds = [
        _cpu_seconds(client.pid) - before
        for client, before in zip(clients, clients_cpu_before, strict=True)
    ]
    result.client_run_queue_seconds = [
        _run_queue_seconds(client.pid) - before
        for client, before in zip(clients, clients_run_queue_before, strict=True)
    ]
    result.rss_after_kib = _status_kib(server.pid, "VmRSS")
    result.rss_peak_kib = _status_kib(server.pid, "VmHWM")
    for number, (first, last, _count) in sorted(per_event.items()):
        committed = published[number][1]
        result.first_after_commit_ms.append((first - committed) * 1000)
        result.last_after_commit_ms.append((last - committed) * 1000)


# --- the report -----------------------------------------------------------------------------


def _ms(values: list[float], *fractions: float) -> str:
    ordered = sorted(values)
    return " / ".join(f"{_percentile(ordered, fraction):.1f}" for fraction in fractions) + " ms"


def report(result: Run) -> None:
    label = {"sqlite": "embedded default (SQLite log)", "redis": "Redis"}[result.backend]
    print(
        f"sse_fanout, {label}: {result.clients:,} clients, {result.events} events "
        f"{result.interval * 1000:g} ms apart from a worker-like process"
    )
    failures = ", ".join(f"{reason} x{count}" for reason, count in result.connect_failures.items())
    row(
        "clients connected (first bytes received)",
        f"{result.connected:,}/{result.clients:,} in {result.connect_seconds:.1f} s"
        + (f"; failures: {failures}" if failures else ""),
    )
    delivered = len(result.latencies_ms)
    row(
        "deliveries received / expected",
        f"{delivered:,}/{result.expected:,} ({delivered / result.expected:.2%})",
    )
    row(
        "  duplicates / out of order / foreign / ended early / short",
        f"{result.duplicates} / {result.out_of_order} / {result.foreign} / "
        f"{result.closed_early} / {result.incomplete}",
    )
    if result.latencies_ms:
        p99 = _percentile(sorted(result.latencies_ms), 0.99)
        verdict = "met" if p99 < TARGET_P99_MS else "MISSED"
        row(
            "delivery latency p50 / p90 / p99 / max",
            _ms(result.latencies_ms, 0.5, 0.9, 0.99, 1.0)
            + f"  (p99 < {TARGET_P99_MS:g} ms: {verdict})",
        )
    if result.first_after_commit_ms:
        row(
            "  commit() returned -> first client, per event: p50 / p99 / max",
            _ms(result.first_after_commit_ms, 0.5, 0.99, 1.0),
        )
        row(
            "  commit() returned -> last client, per event: p50 / p99 / max",
            _ms(result.last_after_commit_ms, 0.5, 0.99, 1.0),
        )
    if result.commit_ms:
        row(
            "  publisher create + commit: p50 / p99 / max",
            _ms(result.commit_ms, 0.5, 0.99, 1.0)
            + f"; {result.events} events in {result.publish_seconds:.2f} s",
        )
    per_connection = (
        (result.rss_connected_kib - result.rss_idle_kib) / result.connected
        if result.connected
        else 0.0
    )
    row(
        "server RSS idle -> connected (per connection)",
        f"{result.rss_idle_kib / 1024:.1f} -> {result.rss_connected_kib / 1024:.1f} MiB "
        f"({per_connection:.1f} KiB)",
    )
    row(
        "server RSS after publishing (peak)",
        f"{result.rss_after_kib / 1024:.1f} MiB ({result.rss_peak_kib / 1024:.1f} MiB)",
    )
    row(
        "server CPU over the publish phase",
        f"{result.server_cpu_seconds:.2f} s in {result.phase_seconds:.2f} s "
        f"({result.server_cpu_seconds / result.phase_seconds:.0%} of a core)",
    )
    if result.latencies_ms:
        per_delivery_us = result.server_cpu_seconds / len(result.latencies_ms) * 1e6
        row("  server CPU per delivery", f"{per_delivery_us:.1f} us")
    row(
        "  server CPU with every client connected, no events",
        f"{result.idle_cpu_per_second * 1000:.0f} ms per second",
    )
    row(
        "  server event loop runnable but waiting for a CPU",
        f"{result.server_run_queue_seconds:.2f} s",
    )
    row(
        "client processes' / publisher's CPU over the same phase",
        ", ".join(f"{seconds:.2f} s" for seconds in result.client_cpu_seconds)
        + f" / {result.publisher_cpu_seconds:.2f} s",
    )
    row(
        "  client processes runnable but waiting for a CPU",
        ", ".join(f"{seconds:.2f} s" for seconds in result.client_run_queue_seconds),
    )
    ours = result.server_cpu_seconds + sum(result.client_cpu_seconds)
    ours += result.publisher_cpu_seconds
    cores = os.cpu_count() or 1
    row(
        "machine: CPU used by everything / by other processes",
        f"{result.machine_busy_seconds:.2f} s / {result.machine_busy_seconds - ours:.2f} s "
        f"of {cores * result.phase_seconds:.2f} s ({cores} cores); "
        f"load average {result.load_average:.2f}",
    )
    row("server stopped (SIGTERM, clients gone) in", f"{result.stop_seconds:.2f} s")
    problems = result.server_log_problems
    row("server log lines (WARNING and above only)", str(len(problems)))
    for line in problems[:5]:
        print(f"    {line[:160]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["both", "sqlite", "redis"], default="both")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between events")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--role", choices=["clients", "publisher"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--owner-id", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.role == "clients":
        _run_clients(options)
        return
    if options.role == "publisher":
        _run_publisher(options)
        return

    _raise_fd_limit()  # the server inherits it
    backends = ["sqlite", "redis"] if options.backend == "both" else [options.backend]
    for backend in backends:
        if backend == "redis" and not _redis_reachable():
            print(f"sse_fanout, Redis: unreachable at {REDIS_URL}, skipped")
            continue
        report(run(backend, options))


if __name__ == "__main__":
    main()
