"""Web: who is looking at a page (the session cookie's user, if any), and where a sign-in may
send them afterwards."""

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, Request

from storeroom.auth.sessions import service as sessions_service
from storeroom.auth.sessions.exceptions import SessionEnded
from storeroom.core.db import DbReader
from storeroom.core.dependencies import AppSettings, Now
from storeroom.users.models import User

DEFAULT_NEXT = "/app"
MAX_NEXT_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Visitor:
    """A signed-in browser: its user, its session cookie and the session's CSRF token."""

    user: User
    cookie: str
    csrf_token: str


async def current_visitor(
    request: Request, reader: DbReader, settings: AppSettings, now: Now
) -> Visitor | None:
    cookie = request.cookies.get(sessions_service.SESSION_COOKIE)
    if not cookie:
        return None
    try:
        user = await sessions_service.authenticate(reader, cookie, now=now)
    except SessionEnded:
        return None
    return Visitor(user, cookie, sessions_service.csrf_token(cookie, settings))


CurrentVisitor = Annotated[Visitor | None, Depends(current_visitor)]


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site, never another host. `//evil.example`
    and `/\\evil.example` are other hosts to a browser; anything but a plain absolute path goes
    to the dashboard."""
    if (
        not target
        or len(target) > MAX_NEXT_LENGTH
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(character) < 0x20 or ord(character) == 0x7F for character in target)
    ):
        return DEFAULT_NEXT
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return DEFAULT_NEXT
    return target


def login_url(next_path: str) -> str:
    return "/login?" + urlencode({"next": next_path}) if next_path != DEFAULT_NEXT else "/login"
