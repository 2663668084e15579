"""A real SMTP server (aiosmtpd) on its own event loop thread, collecting what it receives."""

import asyncio
import queue
import ssl
import threading
import warnings
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from storeroom.core.config import EmailBackend, SmtpSecurity

RECEIVE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated_as: str | None

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "no text/plain part"
        return str(part.get_content())  # type: ignore[attr-defined]

    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None, "no text/html part"
        return str(part.get_content())  # type: ignore[attr-defined]


class _Collector:
    def __init__(self, inbox: "queue.Queue[ReceivedEmail]") -> None:
        self.inbox = inbox

    async def handle_DATA(self, _server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        login = getattr(session.auth_data, "login", None)
        self.inbox.put(
            ReceivedEmail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                authenticated_as=login.decode() if isinstance(login, bytes) else None,
            )
        )
        return "250 Message accepted for delivery"


class SmtpServer:
    """Listens on 127.0.0.1 and a free port. With `credentials`, clients must log in (AUTH
    PLAIN/LOGIN, allowed without TLS here) with that username and password. With `security`
    starttls or ssl, `tls_context` is the server's certificate and clients must use TLS."""

    def __init__(
        self,
        credentials: tuple[str, str] | None = None,
        *,
        security: SmtpSecurity = SmtpSecurity.none,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.inbox: queue.Queue[ReceivedEmail] = queue.Queue()
        self.credentials = credentials
        self.security = security
        self.tls_context = tls_context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    def _authenticate(
        self, _server: SMTP, _session: Session, _envelope: Envelope, _mechanism: str, data: Any
    ) -> AuthResult:
        assert self.credentials is not None
        username, password = self.credentials
        ok = (
            isinstance(data, LoginPassword)
            and data.login == username.encode()
            and data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=data)

    def _protocol(self) -> SMTP:
        options: dict[str, Any] = {"hostname": "localhost"}  # no DNS lookup for our name
        if self.security is SmtpSecurity.starttls:
            options.update(tls_context=self.tls_context, require_starttls=True)
        if self.credentials is not None:
            options.update(
                authenticator=self._authenticate, auth_required=True, auth_require_tls=False
            )
        with warnings.catch_warnings():  # AUTH without TLS: fine on loopback in a test
            warnings.simplefilter("ignore", UserWarning)
            return SMTP(_Collector(self.inbox), **options)

    def start(self, port: int = 0) -> "SmtpServer":
        """Listen on `port` (0: any free one)."""
        self._thread.start()

        async def listen() -> asyncio.Server:
            implicit_tls = self.tls_context if self.security is SmtpSecurity.ssl else None
            return await self._loop.create_server(
                self._protocol, "127.0.0.1", port, ssl=implicit_tls
            )

        self._server = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def settings_update(self) -> dict[str, Any]:
        """Settings fields pointing the smtp backend at this server."""
        update: dict[str, Any] = {
            "email_backend": EmailBackend.smtp,
            "email_host": "127.0.0.1",
            "email_port": self.port,
            "email_security": SmtpSecurity.none,
            "email_timeout_seconds": 5.0,
        }
        return update

    def next_email(self, timeout: float = RECEIVE_TIMEOUT_SECONDS) -> ReceivedEmail:
        """The next message to arrive, waiting at most `timeout` seconds for it."""
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no email arrived within {timeout} s") from None

    def assert_no_more_email(self) -> None:
        assert self.inbox.empty(), f"unexpected email to {self.inbox.get_nowait().rcpt_tos}"
