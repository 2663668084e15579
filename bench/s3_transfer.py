"""S3 transfer benchmark: a large file uploaded to and downloaded from Storeroom on an S3 store
(POST /api/v1/files, GET /api/v1/files/{id}/content), next to the same transfer made directly
with aiobotocore; MB/s, their ratio, and the server's peak RSS growth during each transfer.

One moto server (`python -m moto.server`, in a process of its own on a free port, stopped at the
end) is the store for both. The direct baseline uses the client S3Storage uses, with its
settings (path addressing, no payload signing, checksums only when required, uvloop): a
multipart upload of 8 MiB parts with one part in flight while the next is prepared, then a
streamed download read 1 MiB at a time and discarded. Storeroom runs under uvicorn with
`storeroom serve`'s protocol (SQLite in a scratch directory, no embedded worker,
STOREROOM_STORAGE_URL=s3://<bucket>/bench). Its upload is a multipart/form-data body streamed
from a generator with httpx; its download is read like the direct one (aiohttp, 1 MiB reads,
discarded) so that both sides use the same client, or with httpx (`--download-client httpx`).
The data is one random 8 MiB block repeated, never the whole file in memory; its sha256 is
computed once before the timed transfers and checked against the server's answer.

Rounds alternate: direct upload, Storeroom upload, direct download, Storeroom download, then
the next round with Storeroom first (A B, B A, ...). Each round's ratio pairs the two transfers
next to each other; the table gives the medians, the CPU
seconds moto and the server used in each transfer, and the server's peak RSS growth (VmRSS
every 50 ms and the kernel's high-water mark) over its RSS before the transfer, after a 1 MiB
warm-up (the server's first requests to the store).

Run: .venv/bin/python -m bench s3_transfer
     .venv/bin/python -m bench.s3_transfer --mib 256 --rounds 3 --download-client httpx
"""

import argparse
import asyncio
import contextlib
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop
from aiobotocore.session import get_session
from botocore.config import Config

from bench.common import Server, free_port, register_and_login, row, serve, storeroom_env
from storeroom.core.config import async_database_url
from storeroom.core.migrations import upgrade

PROTOCOL = "storeroom.core.server:HeadLimitedHttpToolsProtocol"  # what `storeroom serve` runs
PART_BYTES = 8 * 1024 * 1024  # STOREROOM_S3_PART_BYTES's default
READ_BYTES = 1024 * 1024  # what S3Storage reads from the store at a time
BUCKET = "storeroom-bench"
REGION = "us-east-1"
ACCESS_KEY = "storeroom-bench"
SECRET_KEY = "storeroom-bench-secret"
# Credentials the standard AWS way, and nothing from the machine's ~/.aws.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
RATIO_TARGET = 0.70
RSS_TARGET_MIB = 64
TRANSFER_TIMEOUT = httpx.Timeout(600)


@dataclass
class Transfer:
    seconds: float
    store_cpu_seconds: float  # moto's
    server_cpu_seconds: float = 0.0  # Storeroom's (nothing for a direct transfer)
    rss_growth_kib: int = 0
    complete_seconds: float = 0.0  # a direct upload's complete_multipart_upload


@dataclass
class Direction:
    """One direction's transfers, round by round."""

    direct: list[Transfer] = field(default_factory=list)
    storeroom: list[Transfer] = field(default_factory=list)

    def ratio(self) -> float:
        return statistics.median(
            direct.seconds / storeroom.seconds
            for direct, storeroom in zip(self.direct, self.storeroom, strict=True)
        )

    def median_mb_s(self, transfers: list[Transfer], size: int) -> float:
        return size / statistics.median(transfer.seconds for transfer in transfers) / 1e6


@dataclass
class Store:
    endpoint_url: str
    pid: int


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _CpuWatch:
    """CPU seconds the processes used inside the block."""

    def __init__(self, *pids: int):
        self.pids = pids

    def __enter__(self) -> "_CpuWatch":
        self._started = [_cpu_seconds(pid) for pid in self.pids]
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = [
            _cpu_seconds(pid) - started
            for pid, started in zip(self.pids, self._started, strict=True)
        ]


class _RssWatch:
    """The server's peak RSS growth inside the block: VmRSS sampled every 50 ms, and the
    kernel's high-water mark (VmHWM, reset on entry through clear_refs where that is allowed),
    less the RSS on entry. Sampled sparingly: the sampler shares the CPU and the GIL with the
    benchmark's own clients."""

    def __init__(self, server: Server):
        self.server = server
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(self.server.rss_kib())

    def __enter__(self) -> "_RssWatch":
        self.baseline_kib = self.server.rss_kib()
        try:
            Path(f"/proc/{self.server.process.pid}/clear_refs").write_text("5")
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        peak = max(self.samples, default=self.baseline_kib)
        if self._hwm_reset:
            peak = max(peak, self.server.peak_rss_kib())
        self.growth_kib = max(0, peak - self.baseline_kib)


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _chunks(block: bytes, size: int) -> Iterator[bytes]:
    """`size` bytes: `block` over and over (the last piece shorter)."""
    remaining = size
    while remaining:
        piece = block if remaining >= len(block) else block[:remaining]
        remaining -= len(piece)
        yield piece


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[Store]:
    """`python -m moto.server` on a free port. Stopped by its PID."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **AWS_ENV},
        )
    endpoint_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint_url, timeout=1)  # any answer: it listens
                break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start; see {log}")
            time.sleep(0.1)
        yield Store(endpoint_url, process.pid)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


class DirectS3:
    """aiobotocore with S3Storage's settings, straight to the store."""

    def __init__(self, store: Store):
        self.store = store
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def open(self) -> None:
        config = Config(
            s3={"addressing_style": "path", "payload_signing_enabled": False},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "total_max_attempts": 3},
            max_pool_connections=64,
            connect_timeout=3,
            read_timeout=60,
        )
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self.store.endpoint_url,
                region_name=REGION,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                config=config,
            )
        )
        await self._client.create_bucket(Bucket=BUCKET)

    async def close(self) -> None:
        await self._stack.aclose()

    async def upload(self, key: str, block: bytes, size: int) -> Transfer:
        """A multipart upload of `size` bytes, one part in flight while the next is prepared,
        as S3Storage's writer does."""
        client = self._client
        parts: list[dict[str, Any]] = []

        async def send(number: int, data: bytes) -> None:
            response = await client.upload_part(
                Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
            parts[number - 1]["ETag"] = response["ETag"]

        with _CpuWatch(self.store.pid) as cpu:
            started = time.perf_counter()
            created = await client.create_multipart_upload(Bucket=BUCKET, Key=key)
            upload_id = created["UploadId"]
            in_flight: asyncio.Task[None] | None = None
            for number, data in enumerate(_chunks(block, size), start=1):
                if in_flight is not None:
                    await in_flight
                parts.append({"PartNumber": number})
                in_flight = asyncio.create_task(send(number, data))
            if in_flight is not None:
                await in_flight
            completing = time.perf_counter()
            await client.complete_multipart_upload(
                Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            finished = time.perf_counter()
        return Transfer(finished - started, cpu.seconds[0], complete_seconds=finished - completing)

    async def download(self, key: str, size: int) -> Transfer:
        received = 0
        with _CpuWatch(self.store.pid) as cpu:
            started = time.perf_counter()
            response = await self._client.get_object(Bucket=BUCKET, Key=key)
            body = response["Body"]
            try:
                while chunk := await body.read(READ_BYTES):
                    received += len(chunk)
            finally:
                body.close()
            elapsed = time.perf_counter() - started
        assert received == size, f"direct download: {received} bytes, not {size}"
        return Transfer(elapsed, cpu.seconds[0])


def _multipart_body(block: bytes, size: int) -> tuple[Iterator[bytes], str, int]:
    """A multipart/form-data body with one part `file` of `size` bytes, as a generator; its
    Content-Type and Content-Length."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        yield from _chunks(block, size)
        yield tail

    return body(), f"multipart/form-data; boundary={boundary}", len(head) + size + len(tail)


def _measured(seconds: float, cpu: _CpuWatch, rss: _RssWatch) -> Transfer:
    """A transfer through Storeroom, from the watches of (the store, the server)."""
    store_cpu_seconds, server_cpu_seconds = cpu.seconds
    return Transfer(seconds, store_cpu_seconds, server_cpu_seconds, rss.growth_kib)


@dataclass
class Storeroom:
    """The server, the store's PID, and a client logged in to the server (httpx; for
    downloads aiohttp, in `runner`, unless `download_client` says httpx)."""

    server: Server
    store_pid: int
    client: httpx.Client
    runner: asyncio.Runner
    download_client: str

    def upload(self, block: bytes, size: int, digest: str) -> tuple[Transfer, str]:
        """The transfer and the new file's id."""
        body, content_type, length = _multipart_body(block, size)
        with (
            _RssWatch(self.server) as rss,
            _CpuWatch(self.store_pid, self.server.process.pid) as cpu,
        ):
            started = time.perf_counter()
            response = self.client.post(
                "/api/v1/files",
                content=body,
                headers={"Content-Type": content_type, "Content-Length": str(length)},
                timeout=TRANSFER_TIMEOUT,
            )
            elapsed = time.perf_counter() - started
        response.raise_for_status()
        stored = response.json()
        assert stored["size"] == size, f"the server stored {stored['size']} bytes, not {size}"
        assert stored["sha256"] == digest, "the server hashed something else"
        return _measured(elapsed, cpu, rss), str(stored["id"])

    def download(self, file_id: str, size: int) -> Transfer:
        path = f"/api/v1/files/{file_id}/content"
        with (
            _RssWatch(self.server) as rss,
            _CpuWatch(self.store_pid, self.server.process.pid) as cpu,
        ):
            started = time.perf_counter()
            if self.download_client == "aiohttp":
                received = self.runner.run(self._read_with_aiohttp(path))
            else:
                received = self._read_with_httpx(path)
            elapsed = time.perf_counter() - started
        assert received == size, f"Storeroom download: {received} bytes, not {size}"
        return _measured(elapsed, cpu, rss)

    async def _read_with_aiohttp(self, path: str) -> int:
        """The body read as the direct download reads it: aiohttp, READ_BYTES at a time."""
        received = 0
        async with (
            aiohttp.ClientSession(
                headers={"Authorization": self.client.headers["Authorization"]},
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT.read),
            ) as session,
            session.get(self.server.base_url + path) as response,
        ):
            response.raise_for_status()
            while chunk := await response.content.read(READ_BYTES):
                received += len(chunk)
        return received

    def _read_with_httpx(self, path: str) -> int:
        received = 0
        with self.client.stream("GET", path, timeout=TRANSFER_TIMEOUT) as response:
            response.raise_for_status()
            for chunk in response.iter_raw():
                received += len(chunk)
        return received

    def delete(self, file_id: str) -> None:
        self.client.delete(f"/api/v1/files/{file_id}").raise_for_status()

    def warm_up(self, block: bytes) -> None:
        """One small file up and down, so that the server's first requests to the store (its
        pooled connection, code imported on first use) are behind it before any RSS baseline."""
        size = 1024 * 1024
        _, file_id = self.upload(block, size, hashlib.sha256(block[:size]).hexdigest())
        self.download(file_id, size)
        self.delete(file_id)


def _storeroom_env(workdir: Path, endpoint_url: str, size: int) -> dict[str, str]:
    data_dir = workdir / "data"
    data_dir.mkdir()
    database_url = async_database_url(f"sqlite:///{data_dir / 'storeroom.db'}")
    upgrade(database_url)
    return {
        **storeroom_env(database_url, str(data_dir)),
        **AWS_ENV,
        "STOREROOM_STORAGE_URL": f"s3://{BUCKET}/bench",
        "STOREROOM_S3_ENDPOINT_URL": endpoint_url,
        "STOREROOM_S3_REGION": REGION,
        "STOREROOM_MAX_UPLOAD_BYTES": str(size),
        "STOREROOM_USER_QUOTA_BYTES": str(4 * size),
        "STOREROOM_EMBEDDED_WORKER": "false",  # no job runs here; its polling is noise
    }


def _print_rounds(size: int, upload: Direction, download: Direction) -> None:
    print(
        f"  {'':<9} {'round':>5} {'direct MB/s':>12} {'Storeroom MB/s':>15} {'ratio':>6}"
        f"  {'moto CPU s (direct/Storeroom)':>30} {'server CPU s':>13} {'server RSS':>11}"
    )
    for label, direction in (("upload", upload), ("download", download)):
        pairs = zip(direction.direct, direction.storeroom, strict=True)
        for number, (direct, mine) in enumerate(pairs, start=1):
            print(
                f"  {label:<9} {number:>5} {size / direct.seconds / 1e6:>12.0f} "
                f"{size / mine.seconds / 1e6:>15.0f} {direct.seconds / mine.seconds:>6.0%}  "
                f"{direct.store_cpu_seconds:>22.1f} / {mine.store_cpu_seconds:<5.1f} "
                f"{mine.server_cpu_seconds:>13.1f} {mine.rss_growth_kib / 1024:>+7.1f} MiB"
            )


def _print_storeroom(size: int, label: str, direction: Direction) -> None:
    ratio = direction.ratio()
    row(
        label,
        f"{direction.median_mb_s(direction.storeroom, size):6.0f} MB/s {ratio:5.0%} of direct "
        f"(target >= {RATIO_TARGET:.0%}) {_verdict(ratio >= RATIO_TARGET)}",
    )


def _ratio_without_completion(upload: Direction) -> float:
    """The upload ratio with the direct upload's complete_multipart_upload time taken off both
    sides: moto assembles the object in one thread, the same work for either, and at 1 GiB it
    takes about half the upload."""
    return statistics.median(
        (direct.seconds - direct.complete_seconds) / (mine.seconds - direct.complete_seconds)
        for direct, mine in zip(upload.direct, upload.storeroom, strict=True)
    )


def _print_rss(label: str, direction: Direction) -> None:
    growth_mib = max(transfer.rss_growth_kib for transfer in direction.storeroom) / 1024
    row(
        f"server peak RSS growth during {label} (worst round)",
        f"{growth_mib:6.1f} MiB (target < {RSS_TARGET_MIB}) "
        f"{_verdict(growth_mib < RSS_TARGET_MIB)}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds per direction")
    parser.add_argument(
        "--download-client",
        choices=["aiohttp", "httpx"],
        default="aiohttp",
        help="client of the Storeroom downloads (default: aiohttp, as the direct ones)",
    )
    options = parser.parse_args()
    size = options.mib * 1024 * 1024
    block = os.urandom(PART_BYTES)
    hasher = hashlib.sha256()
    for piece in _chunks(block, size):
        hasher.update(piece)
    digest = hasher.hexdigest()

    upload, download = Direction(), Direction()
    with (
        tempfile.TemporaryDirectory(prefix="storeroom-bench-s3-") as scratch,
        moto_server(Path(scratch) / "moto.log") as store,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        direct = DirectS3(store)
        runner.run(direct.open())
        env = _storeroom_env(Path(scratch), store.endpoint_url, size)
        with (
            serve("storeroom.main:create_app", env=env, http=PROTOCOL) as server,
            httpx.Client(
                base_url=server.base_url,
                headers={"Authorization": f"Bearer {register_and_login(server.base_url)}"},
                timeout=30,
            ) as client,
        ):
            storeroom = Storeroom(server, store.pid, client, runner, options.download_client)
            idle_kib = server.rss_kib()
            storeroom.warm_up(block)
            warm_kib = server.rss_kib()
            load_average = os.getloadavg()[0]
            for number in range(options.rounds):
                direct_first = number % 2 == 0  # A B, then B A: neither always goes first
                if direct_first:
                    upload.direct.append(runner.run(direct.upload("direct", block, size)))
                transfer, file_id = storeroom.upload(block, size, digest)
                upload.storeroom.append(transfer)
                if not direct_first:
                    upload.direct.append(runner.run(direct.upload("direct", block, size)))
                    download.storeroom.append(storeroom.download(file_id, size))
                download.direct.append(runner.run(direct.download("direct", size)))
                if direct_first:
                    download.storeroom.append(storeroom.download(file_id, size))
                storeroom.delete(file_id)
            final_kib = server.rss_kib()
        runner.run(direct.close())

    print(
        f"s3_transfer: {options.mib} MiB through moto (python -m moto.server), "
        f"{PART_BYTES // 2**20} MiB parts, direct and Storeroom alternated x{options.rounds}, "
        f"Storeroom downloads with {options.download_client} "
        f"(load average {load_average:.1f} before, {os.getloadavg()[0]:.1f} after)"
    )
    _print_rounds(size, upload, download)
    complete_seconds = statistics.median(transfer.complete_seconds for transfer in upload.direct)
    row(
        "upload, direct with aiobotocore (median)",
        f"{upload.median_mb_s(upload.direct, size):6.0f} MB/s, {complete_seconds:.1f} s of it in "
        "complete_multipart_upload",
    )
    _print_storeroom(size, "upload, POST /api/v1/files (median)", upload)
    row(
        "upload ratio without the store's completion (estimate)",
        f"{'':11} {_ratio_without_completion(upload):5.0%} of direct",
    )
    _print_rss("upload", upload)
    row(
        "download, direct with aiobotocore (median)",
        f"{download.median_mb_s(download.direct, size):6.0f} MB/s",
    )
    _print_storeroom(size, "download, GET /api/v1/files/{id}/content (median)", download)
    _print_rss("download", download)
    row(
        "server RSS idle / after warm-up / at the end",
        f"{idle_kib / 1024:.0f} / {warm_kib / 1024:.0f} / {final_kib / 1024:.0f} MiB",
    )


if __name__ == "__main__":
    main()
