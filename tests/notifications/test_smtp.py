"""The smtp backend, against a real SMTP server in the test process."""

import asyncio
import logging
import smtplib
import socket
import ssl
from email.message import EmailMessage

import pytest
import trustme
from fastapi.testclient import TestClient

from storeroom.core.config import Settings, SmtpSecurity
from storeroom.main import create_app
from storeroom.notifications import service as notifications_service
from storeroom.notifications.senders import SmtpSender
from tests.conftest import login, register
from tests.smtp import SmtpServer


def _message() -> EmailMessage:
    return notifications_service.welcome_email(Settings(), "carol@example.com")


def test_welcome_email_arrives_over_smtp_after_registration(
    settings: Settings, smtp_server: SmtpServer
) -> None:
    app = create_app(settings.model_copy(update=smtp_server.settings_update()))
    with TestClient(app) as client:
        register(client, "carol@example.com")
    received = smtp_server.next_email()
    assert received.rcpt_tos == ["carol@example.com"]
    assert received.message["Subject"] == "Welcome to Storeroom"
    assert "carol@example.com" in received.text()
    assert "carol@example.com" in received.html()
    smtp_server.assert_no_more_email()


def test_smtp_sender_logs_in_with_the_configured_credentials() -> None:
    server = SmtpServer(credentials=("mailer", "s3cret")).start()
    try:
        sender = SmtpSender(
            "127.0.0.1",
            server.port,
            security=SmtpSecurity.none,
            username="mailer",
            password="s3cret",
        )
        asyncio.run(sender.send(_message()))
        assert server.next_email().authenticated_as == "mailer"
    finally:
        server.stop()


def test_smtp_sender_with_a_wrong_password_raises() -> None:
    server = SmtpServer(credentials=("mailer", "s3cret")).start()
    try:
        sender = SmtpSender(
            "127.0.0.1", server.port, security=SmtpSecurity.none, username="mailer", password="nope"
        )
        with pytest.raises(smtplib.SMTPAuthenticationError):
            asyncio.run(sender.send(_message()))
        server.assert_no_more_email()
    finally:
        server.stop()


@pytest.mark.parametrize("security", [SmtpSecurity.starttls, SmtpSecurity.ssl])
def test_smtp_sender_delivers_over_tls(security: SmtpSecurity) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    server = SmtpServer(("mailer", "s3cret"), security=security, tls_context=server_context)
    server.start()
    try:
        sender = SmtpSender(
            "localhost",
            server.port,
            security=security,
            username="mailer",
            password="s3cret",
            tls_context=client_context,
        )
        asyncio.run(sender.send(_message()))
        assert server.next_email().authenticated_as == "mailer"
    finally:
        server.stop()


def test_smtp_sender_refuses_an_untrusted_certificate() -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost").configure_cert(server_context)
    server = SmtpServer(security=SmtpSecurity.starttls, tls_context=server_context).start()
    try:
        sender = SmtpSender("localhost", server.port, security=SmtpSecurity.starttls)
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(sender.send(_message()))
        server.assert_no_more_email()
    finally:
        server.stop()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_failed_delivery_is_logged_with_traceback_and_registration_still_succeeds(
    settings: Settings, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = {**smtp_server.settings_update(), "email_port": _closed_port()}
    app = create_app(settings.model_copy(update=unreachable))
    with (
        caplog.at_level(logging.ERROR, logger="storeroom.notifications"),
        TestClient(app) as client,
    ):
        response = client.post(
            "/api/v1/users", json={"email": "carol@example.com", "password": "long-enough"}
        )
        assert response.status_code == 201
        login(client, "carol@example.com", "long-enough")
    [record] = [r for r in caplog.records if r.name == "storeroom.notifications"]
    assert "welcome" in record.getMessage() and "carol@example.com" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], OSError)
