"""The outbox backend: every email becomes one whole .eml file a developer can open."""

import re
import stat
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.conftest import login, register


def _wait_for_emails(outbox: Path, count: int = 1, timeout: float = 5.0) -> list[Path]:
    """The outbox's .eml files once there are `count` of them (the email is sent by a
    background task, so it may land a moment after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(outbox.glob("*.eml"))
        if len(files) >= count or time.monotonic() > deadline:
            assert len(files) == count, f"{len(files)} emails in {outbox} after {timeout} s"
            return files
        time.sleep(0.01)


def _parse(path: Path) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


def test_registration_writes_a_welcome_eml_with_text_and_html_parts(
    client: TestClient, settings: Settings
) -> None:
    register(client, "carol@example.com")
    [path] = _wait_for_emails(settings.outbox_dir)
    message = _parse(path)
    assert message["To"] == "carol@example.com"
    assert message["Subject"] == "Welcome to Storeroom"
    assert message["From"] == settings.email_from
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "carol@example.com" in text.get_content()  # type: ignore[attr-defined]
    assert "<strong>carol@example.com</strong>" in html.get_content()  # type: ignore[attr-defined]


def test_outbox_holds_only_finished_private_files(client: TestClient, settings: Settings) -> None:
    register(client, "carol@example.com")
    register(client, "dave@example.com")
    paths = _wait_for_emails(settings.outbox_dir, count=2)
    assert sorted(path.name for path in settings.outbox_dir.iterdir()) == [p.name for p in paths]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(_parse(path)["To"] for path in paths) == [
        "carol@example.com",
        "dave@example.com",
    ]


def test_reset_link_reads_as_is_in_the_raw_eml_file(client: TestClient, settings: Settings) -> None:
    """The README's recipe: grep the token out of the newest .eml, then reset with it."""
    register(client, "carol@example.com")
    _wait_for_emails(settings.outbox_dir)
    response = client.post("/api/v1/auth/password-recovery", json={"email": "carol@example.com"})
    assert response.status_code == 202
    newest = _wait_for_emails(settings.outbox_dir, count=2)[-1]
    assert _parse(newest)["Subject"] == "Reset your Storeroom password"
    raw = newest.read_text(encoding="ascii")
    assert re.search(r"^Subject: Reset your Storeroom password\r?$", raw, re.MULTILINE)
    assert f"{settings.public_url}/reset-password?token=" in raw
    match = re.search(r"token=([A-Za-z0-9._-]+)", raw)
    assert match is not None
    reset = client.post(
        "/api/v1/auth/reset-password",
        json={"token": match[1], "new_password": "another-long-password"},
    )
    assert reset.status_code == 200
    login(client, "carol@example.com", "another-long-password")
