"""`storeroom serve --workers N`: N app processes on one data directory. Requests are served
by all of them alike; what belongs to the installation rather than to a process (the embedded
job worker, the sweeps) runs in exactly one of them, and another takes it over when that one
dies."""

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.servers import ServeProcess, serve

PASSWORD = "correct horse battery"
HOUSEKEEPING = (
    "sweeping incomplete uploads: done by this process",
    "sweeping expired idempotency keys: done by this process",
)


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _job_workers(server: ServeProcess) -> list[int]:
    """Running `storeroom worker` main processes (not their pool's children, which share the
    command line)."""
    workers = []
    for process in server.descendants():
        if not process.alive() or "storeroom.cli worker" not in _command_line(process.pid):
            continue
        try:
            if "storeroom.cli worker" not in _command_line(_parent(process.pid)):
                workers.append(process.pid)
        except FileNotFoundError:
            continue
    return workers


def _app_processes(server: ServeProcess) -> list[int]:
    """The processes uvicorn started to serve (beside its multiprocessing resource tracker)."""
    return [
        process.pid
        for process in server.descendants()
        if process.alive()
        and _parent(process.pid) == server.process.pid
        and "spawn_main" in _command_line(process.pid)
    ]


def _lines(server: ServeProcess, text: str) -> list[str]:
    return [line for line in server.output().splitlines() if text in line]


def _wait_for(condition: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture
def two_workers(tmp_path: Path, migrated_databases: dict[str, str]) -> Iterator[ServeProcess]:
    template = Path(migrated_databases["sqlite"].split(":///", 1)[1])
    database = tmp_path / "storeroom.db"
    shutil.copyfile(template, database)
    env = {
        "STOREROOM_DATABASE_URL": f"sqlite:///{database}",
        "STOREROOM_LOG_LEVEL": "INFO",
        "STOREROOM_EMBEDDED_WORKER": "true",
    }
    with serve(tmp_path, env, "--workers", "2") as server:
        _wait_for(lambda: len(_app_processes(server)) == 2)
        _wait_for(lambda: all(_lines(server, text) for text in HOUSEKEEPING))
        _wait_for(lambda: len(_job_workers(server)) == 1)
        yield server


def test_both_processes_serve_the_same_accounts(two_workers: ServeProcess) -> None:
    with httpx.Client(base_url=two_workers.base_url, timeout=30) as client:
        client.post("/api/v1/users", json={"email": "a@example.com", "password": PASSWORD})
        token = client.post(
            "/api/v1/auth/token", data={"username": "a@example.com", "password": PASSWORD}
        ).json()["access_token"]
        # New connections are spread over both processes by the kernel; every one of them
        # must know the signing key, the account and the item.
        created = client.post(
            "/api/v1/items",
            json={"name": "Lamp", "price": "20.00"},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
    for _ in range(40):
        with httpx.Client(base_url=two_workers.base_url, timeout=30) as fresh:
            page = fresh.get("/api/v1/items", headers={"Authorization": f"Bearer {token}"})
            assert page.status_code == 200
            assert [item["id"] for item in page.json()["items"]] == [created["id"]]


def test_one_embedded_worker_and_one_of_each_sweep_for_two_processes(
    two_workers: ServeProcess,
) -> None:
    time.sleep(2)  # the second process had time to start whatever it would start
    assert len(_app_processes(two_workers)) == 2
    assert len(_job_workers(two_workers)) == 1
    assert len(_lines(two_workers, "started the embedded job worker")) == 1
    for text in HOUSEKEEPING:
        assert len(_lines(two_workers, text)) == 1, two_workers.output()


def _pid_in(line: str) -> int:
    return int(re.search(r"pid (\d+)", line).group(1))  # type: ignore[union-attr]


def test_another_process_takes_over_when_the_one_doing_it_dies(
    two_workers: ServeProcess,
) -> None:
    # Each lock goes to whichever process takes it first: kill every process holding one.
    (old_worker,) = _job_workers(two_workers)
    holders = {_pid_in(_lines(two_workers, text)[0]) for text in HOUSEKEEPING}
    holders.add(_parent(old_worker))
    for pid in holders:
        os.kill(pid, signal.SIGKILL)

    # uvicorn starts processes in their place; the others take the sweeps and the job worker
    for text in HOUSEKEEPING:
        _wait_for(lambda text=text: len(_lines(two_workers, text)) == 2)  # type: ignore[misc]
        assert _pid_in(_lines(two_workers, text)[1]) not in holders
    _wait_for(lambda: _job_workers(two_workers) not in ([], [old_worker]))
    _wait_for(lambda: len(_app_processes(two_workers)) == 2)  # uvicorn replaced the killed
    time.sleep(2)
    assert len(_job_workers(two_workers)) == 1
    _wait_for(lambda: not _exists(old_worker))  # the orphaned worker stopped by itself


def _exists(pid: int) -> bool:
    try:  # a zombie left for an init that does not reap counts as stopped
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")
    except FileNotFoundError:
        return False


def _hashing_processes(server: ServeProcess, app_process: int) -> list[int]:
    return [
        process.pid
        for process in server.descendants()
        if process.alive()
        and _parent(process.pid) == app_process
        and "spawn_main" in _command_line(process.pid)
    ]


def test_the_processes_share_the_cores_for_password_hashing(two_workers: ServeProcess) -> None:
    with httpx.Client(base_url=two_workers.base_url, timeout=30) as client:
        client.post("/api/v1/users", json={"email": "h@example.com", "password": PASSWORD})

    def log_in(_: int) -> int:  # on a new connection: the logins reach both processes
        with httpx.Client(base_url=two_workers.base_url, timeout=60) as fresh:
            return fresh.post(
                "/api/v1/auth/token", data={"username": "h@example.com", "password": PASSWORD}
            ).status_code

    with ThreadPoolExecutor(8) as pool:  # at once, so that each process hashes side by side
        assert list(pool.map(log_in, range(24))) == [200] * 24
    share = max(1, (os.cpu_count() or 2) // 2)
    counts = [len(_hashing_processes(two_workers, pid)) for pid in _app_processes(two_workers)]
    assert sum(counts) >= 1
    assert all(count <= share for count in counts), counts
