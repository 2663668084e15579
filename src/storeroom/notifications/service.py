"""Notifications: composing the emails Storeroom sends, and delivering them after the response."""

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from functools import partial
from typing import Any

import anyio.to_thread
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from storeroom.core.config import Settings
from storeroom.notifications.senders import EmailSender

logger = logging.getLogger("storeroom.notifications")

# HTML templates are autoescaped, so nothing a user typed can become markup in an email.
_templates = Environment(
    loader=PackageLoader("storeroom.notifications", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    auto_reload=False,
    keep_trailing_newline=True,
)


def render(template: str, **context: Any) -> str:
    return _templates.get_template(template).render(context)


def compose(
    settings: Settings, *, to: str, subject: str, template: str, **context: Any
) -> EmailMessage:
    """A multipart/alternative message: `<template>.txt` is the plain-text part and
    `<template>.html` the HTML part, both given `subject`, `public_url` and `context`."""
    context = {"subject": subject, "public_url": settings.public_url, **context}
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    # An explicit domain: make_msgid() would otherwise ask DNS for this host's name.
    message["Message-ID"] = make_msgid(domain=_domain_of(settings.email_from))
    text = render(f"{template}.txt", **context)
    html = render(f"{template}.html", **context)
    message.set_content(text, cte=_transfer_encoding(text))
    message.add_alternative(html, subtype="html", cte=_transfer_encoding(html))
    return message


def _transfer_encoding(body: str) -> str | None:
    """7bit whenever the body allows it (ASCII, lines within RFC 5322's 998 characters), so a
    link reads as is in the raw .eml file; otherwise the library picks quoted-printable or
    base64."""
    if body.isascii() and all(len(line) <= 998 for line in body.splitlines()):
        return "7bit"
    return None


def _domain_of(address: str) -> str:
    _name, bare = parseaddr(address)
    return bare.rpartition("@")[2] or "storeroom.local"


def welcome_email(settings: Settings, to: str) -> EmailMessage:
    return compose(settings, to=to, subject="Welcome to Storeroom", template="welcome", email=to)


def password_reset_email(settings: Settings, to: str, reset_url: str) -> EmailMessage:
    return compose(
        settings,
        to=to,
        subject="Reset your Storeroom password",
        template="password_reset",
        email=to,
        reset_url=reset_url,
        valid_minutes=settings.password_reset_minutes,
    )


def job_finished_email(
    settings: Settings,
    to: str,
    *,
    what: str,
    outcome: str,
    job_id: str,
    done: int,
    total: int | None,
    counts: list[tuple[str, int]],
    error: str | None,
    file_id: str | None,
) -> EmailMessage:
    """How a background job ended: its counts, its error, and for an export the file's link."""
    file_url = f"{settings.public_url}/api/v1/files/{file_id}/content" if file_id else None
    return compose(
        settings,
        to=to,
        subject=f"Your {what} {outcome}",
        template="job_finished",
        what=what,
        outcome=outcome,
        job_url=f"{settings.public_url}/api/v1/jobs/{job_id}",
        done=done,
        total=total,
        counts=counts,
        error=error,
        file_url=file_url,
    )


async def deliver(
    sender: EmailSender, kind: str, to: str, build: Callable[[], EmailMessage]
) -> None:
    """Compose and send one email. This runs as a background task after the response, where
    an exception would reach no one: a failure is logged with its traceback instead."""
    try:
        message = await anyio.to_thread.run_sync(build)  # templates are read from disk
        await sender.send(message)
    except Exception:
        logger.exception("could not send the %s email to %s", kind, to)
    else:
        logger.info("sent the %s email to %s", kind, to)


class Mailer:
    """The emails the app sends. Each is composed and sent after the response, through
    `schedule` (a request's BackgroundTasks.add_task), so a slow or failing mail server never
    delays or fails a request."""

    def __init__(
        self, sender: EmailSender, settings: Settings, schedule: Callable[..., None]
    ) -> None:
        self._sender = sender
        self._settings = settings
        self._schedule = schedule

    def send_welcome(self, to: str) -> None:
        self._later("welcome", to, partial(welcome_email, self._settings, to))

    def send_password_reset(self, to: str, reset_url: str) -> None:
        self._later(
            "password reset", to, partial(password_reset_email, self._settings, to, reset_url)
        )

    def _later(self, kind: str, to: str, build: Callable[[], EmailMessage]) -> None:
        self._schedule(deliver, self._sender, kind, to, build)
