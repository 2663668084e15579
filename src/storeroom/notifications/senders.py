"""Notifications: the ways an email leaves Storeroom (an outbox directory, or an SMTP server)."""

import os
import smtplib
import ssl
import tempfile
import uuid
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import anyio.to_thread

from storeroom.core.config import EmailBackend, Settings, SmtpSecurity
from storeroom.core.paths import private_dir


class EmailSender(Protocol):
    """Delivers one finished message; raises when it cannot."""

    async def send(self, message: EmailMessage) -> None: ...


class OutboxSender:
    """Writes each message as an `.eml` file a developer can open in any mail client.

    The file appears whole or not at all (written to a hidden temporary file in the same
    directory, then renamed), so a reader polling the directory never sees half a message.
    Files are readable by the owner only: they carry reset links."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage) -> None:
        await anyio.to_thread.run_sync(self._write, message.as_bytes(policy=policy.SMTP))

    def _write(self, content: bytes) -> Path:
        private_dir(self.directory)  # every level it creates, not only the last
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:12]}.eml"
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.directory / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return self.directory / name


class SmtpSender:
    """Hands each message to an SMTP server from a worker thread (smtplib blocks), one
    connection per message: Storeroom sends few emails, and a fresh connection never finds a
    server-side timeout."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: SmtpSecurity,
        username: str = "",
        password: str = "",
        timeout_seconds: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.timeout_seconds = timeout_seconds
        # The system's trusted CAs, with hostname checks; tests pass their own.
        self.tls_context = tls_context or ssl.create_default_context()

    async def send(self, message: EmailMessage) -> None:
        await anyio.to_thread.run_sync(self._send, message)

    def _connect(self) -> smtplib.SMTP:
        if self.security is SmtpSecurity.ssl:
            return smtplib.SMTP_SSL(
                self.host,
                self.port,
                timeout=self.timeout_seconds,
                context=self.tls_context,
            )
        connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
        if self.security is SmtpSecurity.starttls:
            try:
                connection.starttls(context=self.tls_context)
            except BaseException:
                connection.close()
                raise
        return connection

    def _send(self, message: EmailMessage) -> None:
        with self._connect() as connection:
            if self.username:
                connection.login(self.username, self.password)
            connection.send_message(message)


def create_sender(settings: Settings) -> EmailSender:
    if settings.email_backend is EmailBackend.smtp:
        return SmtpSender(
            settings.email_host,
            settings.email_port,
            security=settings.email_security,
            username=settings.email_username,
            password=settings.email_password.get_secret_value() if settings.email_password else "",
            timeout_seconds=settings.email_timeout_seconds,
        )
    return OutboxSender(settings.outbox_dir)
