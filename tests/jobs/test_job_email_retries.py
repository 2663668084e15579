"""A job's email through SMTP when the mail server is down at first: the worker logs the failure
and Celery retries it until the server is back; the job's status never changes."""

import socket
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import EmailBackend, Settings, SmtpSecurity
from tests.jobs.conftest import (
    Worker,
    csv_rows,
    get_job,
    start_import,
    start_worker,
    upload,
    wait_for_job,
)
from tests.smtp import SmtpServer


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


SMTP_PORT = _free_port()


@pytest.fixture(scope="module")
def worker(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    migrated_databases: dict[str, str],
) -> Iterator[Worker]:
    yield from start_worker(
        request,
        tmp_path_factory,
        migrated_databases,
        "filesystem",
        email_backend=EmailBackend.smtp,
        email_host="127.0.0.1",
        email_port=SMTP_PORT,
        email_security=SmtpSecurity.none,
        email_timeout_seconds=2.0,
    )


@pytest.fixture
def settings(worker: Worker) -> Settings:
    return worker.fresh_settings()


def test_a_failed_email_is_retried_and_never_changes_the_job(
    client: TestClient, alice: dict[str, str], worker: Worker
) -> None:
    job = start_import(client, alice, upload(client, alice, csv_rows(2)))
    done = wait_for_job(client, alice, job["id"], worker=worker)
    assert done["status"] == "succeeded"

    deadline = time.monotonic() + 20
    while f"could not send the email about job {job['id']}" not in worker.log_text():
        assert time.monotonic() < deadline, worker.log_text()
        time.sleep(0.05)
    server = SmtpServer().start(SMTP_PORT)  # the mail server comes back
    try:
        email = server.next_email(timeout=20)
    finally:
        server.stop()
    assert email.rcpt_tos == ["alice@example.com"]
    assert email.message["Subject"] == "Your import succeeded"
    assert "Items imported: 2" in email.text()
    assert get_job(client, alice, job["id"]) == done
