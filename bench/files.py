"""Files benchmark (issue 5): upload and download a 1 GiB file with curl through a real uvicorn
server; MB/s next to `cp` of the same file on the same disk, and the server's peak RSS growth
during each transfer.

Run: make bench BENCH_ARGS=files   (or: .venv/bin/python -m bench files)
Needs curl. Uses SQLite in a scratch directory (the embedded default); the data directory and
the copies live on the same filesystem. STOREROOM_BENCH_FILE_MIB changes the size (default 1024).

Next to `cp` it measures a bare ASGI app that writes the raw body to a file while hashing: the
ceiling any upload endpoint can reach on this machine (uvicorn's socket reads plus SHA-256 plus
the page-cache write), since on a machine with lots of free RAM `cp` copies page cache to page
cache without touching the disk.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import Server, register_and_login, row, serve, storeroom_env
from storeroom.core.config import async_database_url
from storeroom.core.migrations import upgrade

SIZE_MIB = int(os.environ.get("STOREROOM_BENCH_FILE_MIB", "1024"))
RUNS = 3  # best of, on a machine shared with other work
RSS_TARGET_MIB = 64
UPLOAD_TARGET_RATIO = 0.80
DOWNLOAD_TARGET_MB_S = 1000.0


@dataclass
class Transfer:
    seconds: float
    rss_growth_kib: int
    output: str

    def mb_per_s(self, size: int) -> float:
        return size / self.seconds / 1e6


def _make_source(path: Path, size: int) -> None:
    block = os.urandom(8 * 1024 * 1024)
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            handle.write(block[: min(len(block), remaining)])
            remaining -= min(len(block), remaining)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _time_cp(source: Path, target: Path, *, fsync: bool) -> float:
    """`cp` (which copies page cache to page cache in the kernel with copy_file_range), and
    with `fsync` also the flush of the copy to disk, as a default upload does before its 201."""
    target.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(["cp", str(source), str(target)], check=True)
    if fsync:
        subprocess.run(["sync", str(target)], check=True)
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


class _RssWatch:
    """Peak RSS growth of the server during one transfer: the kernel's high-water mark, reset
    before the transfer (clear_refs), with sampling as a fallback where that is not allowed."""

    def __init__(self, server: Server):
        self.server = server
        self.pid = server.process.pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.samples.append(self.server.rss_kib())

    def __enter__(self) -> "_RssWatch":
        self.baseline = self.server.rss_kib()
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        peak = max(self.samples, default=self.baseline)
        if self.hwm_reset:
            peak = max(peak, self.server.peak_rss_kib())
        self.growth_kib = max(0, peak - self.baseline)


def _transfer(server: Server, command: list[str]) -> Transfer:
    with _RssWatch(server) as watch:
        started = time.perf_counter()
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
    return Transfer(elapsed, watch.growth_kib, result.stdout)


def _best(runs: int, once: Callable[[], Transfer]) -> tuple[Transfer, list[Transfer]]:
    results = [once() for _ in range(runs)]
    return min(results, key=lambda transfer: transfer.seconds), results


def _upload_once(server: Server, token: str, source: Path) -> Transfer:
    transfer = _transfer(
        server,
        [
            "curl", "-sS", "--fail-with-body", "-o", "-",
            "-H", f"Authorization: Bearer {token}",
            "-F", f"file=@{source};type=application/octet-stream",
            f"{server.base_url}/api/v1/files",
        ],
    )  # fmt: skip
    return transfer


def _raw_upload_once(server: Server, source: Path) -> Transfer:
    return _transfer(
        server,
        ["curl", "-sS", "--fail", "-o", "-", "-F", f"file=@{source}", f"{server.base_url}/"],
    )


def _download_once(server: Server, token: str, file_id: str) -> Transfer:
    return _transfer(
        server,
        [
            "curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}",
            "-H", f"Authorization: Bearer {token}",
            f"{server.base_url}/api/v1/files/{file_id}/content",
        ],
    )  # fmt: skip


def _delete(server: Server, token: str, file_id: str) -> None:
    subprocess.run(
        ["curl", "-sS", "--fail", "-X", "DELETE", "-H", f"Authorization: Bearer {token}",
         f"{server.base_url}/api/v1/files/{file_id}"],
        check=True,
    )  # fmt: skip


def _measure_uploads(server: Server, token: str, source: Path, digest: str) -> tuple[Transfer, str]:
    """Best of RUNS uploads; every upload but the last is deleted again."""
    results = []
    file_id = ""
    for attempt in range(RUNS):
        transfer = _upload_once(server, token, source)
        body = json.loads(transfer.output)
        assert body["sha256"] == digest, "the server hashed something else"
        assert body["size"] == source.stat().st_size
        results.append(transfer)
        file_id = body["id"]
        if attempt < RUNS - 1:
            _delete(server, token, file_id)
    return min(results, key=lambda transfer: transfer.seconds), file_id


def main() -> None:
    if shutil.which("curl") is None:
        sys.exit("curl is not installed: apt-get install -y curl")
    size = SIZE_MIB * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="storeroom-bench-files-") as workdir:
        scratch = Path(workdir)
        source = scratch / "source.bin"
        _make_source(source, size)
        digest = _sha256(source)  # also leaves the source in the page cache, as for cp
        copy = scratch / "copy.bin"
        cp_mb_s = size / min(_time_cp(source, copy, fsync=False) for _ in range(RUNS)) / 1e6
        cp_fsync_mb_s = size / min(_time_cp(source, copy, fsync=True) for _ in range(RUNS)) / 1e6

        with serve(
            "bench.raw_upload_app:app",
            env={"STOREROOM_BENCH_RAW_DIR": str(scratch)},
            factory=False,
        ) as raw_server:
            raw, _ = _best(RUNS, lambda: _raw_upload_once(raw_server, source))

        data_dir = scratch / "data"
        database_url = async_database_url(f"sqlite:///{data_dir / 'storeroom.db'}")
        data_dir.mkdir()
        upgrade(database_url)
        env = {
            **storeroom_env(database_url, str(data_dir)),
            "STOREROOM_MAX_UPLOAD_BYTES": str(size),
            "STOREROOM_USER_QUOTA_BYTES": str(4 * size),
        }
        with serve("storeroom.main:create_app", env=env) as server:
            token = register_and_login(server.base_url)
            upload, file_id = _measure_uploads(server, token, source, digest)
            download, _ = _best(RUNS, lambda: _download_once(server, token, file_id))
            assert int(download.output) == size, "short download"
        with serve(
            "storeroom.main:create_app", env={**env, "STOREROOM_FILE_FSYNC": "false"}
        ) as server:
            token = register_and_login(server.base_url, "bench2@example.com")
            upload_no_fsync, _ = _measure_uploads(server, token, source, digest)

    print(f"files: {SIZE_MIB} MiB through uvicorn (1 worker) with curl, best of {RUNS}")
    row("cp of the same file on the same disk", f"{cp_mb_s:8.0f} MB/s")
    row("cp, then fsync of the copy", f"{cp_fsync_mb_s:8.0f} MB/s")
    row(
        "raw ASGI body -> file while hashing (no multipart/db)",
        f"{raw.mb_per_s(size):8.0f} MB/s  {raw.mb_per_s(size) / cp_mb_s:5.0%} of cp",
    )
    upload_mb_s = upload.mb_per_s(size)
    row(
        "upload, POST /api/v1/files (fsync before 201, the default)",
        f"{upload_mb_s:8.0f} MB/s  {upload_mb_s / cp_fsync_mb_s:5.0%} of cp+fsync "
        f"(target >= 80%), {raw.seconds / upload.seconds:.0%} of raw",
    )
    no_fsync_mb_s = upload_no_fsync.mb_per_s(size)
    row(
        "upload with STOREROOM_FILE_FSYNC=false",
        f"{no_fsync_mb_s:8.0f} MB/s  {no_fsync_mb_s / cp_mb_s:5.0%} of cp (target >= 80%), "
        f"{raw.seconds / upload_no_fsync.seconds:.0%} of raw",
    )
    row(
        "download, GET /api/v1/files/{id}/content (page cache)",
        f"{download.mb_per_s(size):8.0f} MB/s  (target >= {DOWNLOAD_TARGET_MB_S:.0f})",
    )
    for label, transfer in (
        ("upload", upload),
        ("upload without fsync", upload_no_fsync),
        ("raw ASGI upload", raw),
        ("download", download),
    ):
        row(
            f"server peak RSS growth during {label}",
            f"{transfer.rss_growth_kib / 1024:8.1f} MiB (target < {RSS_TARGET_MIB})",
        )


if __name__ == "__main__":
    main()
