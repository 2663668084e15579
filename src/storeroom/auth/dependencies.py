"""Auth: the dependencies routers declare to require a caller, whatever credential it sends
(a Bearer access token, HTTP Basic email and password, an X-API-Key, or the web UI's session
cookie)."""

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPBasic, HTTPBasicCredentials, OAuth2PasswordBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from storeroom.auth import service as auth_service
from storeroom.auth.api_keys import service as api_keys_service
from storeroom.auth.exceptions import InsufficientScope, InvalidCredentials, NotAuthenticated
from storeroom.auth.rate_limit import LoginLimiter
from storeroom.auth.schemas import Scope
from storeroom.auth.sessions import service as sessions_service
from storeroom.auth.sessions.exceptions import CsrfRejected
from storeroom.core.config import Settings
from storeroom.core.db import commit
from storeroom.core.dependencies import client_ip, current_time
from storeroom.core.errors import PermissionDenied
from storeroom.users.models import User

bearer_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    auto_error=False,
    description="Access token from POST /api/v1/auth/token.",
)


class _LenientHTTPBasic(HTTPBasic):
    """HTTP Basic as in RFC 7617 (UTF-8), where a malformed header is a wrong password: the
    same 401 body as any other bad credential."""

    async def __call__(  # type: ignore[override]  # as FastAPI's own HTTPBasic
        self, request: HTTPConnection
    ) -> HTTPBasicCredentials | None:
        scheme, param = get_authorization_scheme_param(request.headers.get("Authorization"))
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(param, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            raise InvalidCredentials() from exc
        email, separator, password = decoded.partition(":")
        if not separator:
            raise InvalidCredentials()
        return HTTPBasicCredentials(username=email, password=password)


basic_scheme = _LenientHTTPBasic(
    scheme_name="HTTPBasic",
    auto_error=False,
    description="Email and password on every request. Each request pays a password hash.",
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key",
    scheme_name="APIKey",
    auto_error=False,
    description="Personal API key from POST /api/v1/users/me/api-keys.",
)


async def get_login_limiter(request: Request) -> LoginLimiter:
    limiter: LoginLimiter = request.app.state.login_limiter
    return limiter


LoginLimiterDep = Annotated[LoginLimiter, Depends(get_login_limiter)]


@dataclass(frozen=True, slots=True)
class Credential:
    """Who is calling, and what the credential they sent allows."""

    user: User
    scope: Scope


_CREDENTIAL = "storeroom.credential"


async def current_credential(request: Request) -> Credential:
    """Who is calling, from whichever credential the request carries; once per request.

    It reads the three schemes itself (they are documented on every operation that needs a
    caller by `core.openapi.document_security`) and takes what it needs from the app, instead of
    declaring them as dependencies: on the busiest requests, resolving seven dependencies cost
    more than checking the token (bench/throughput.py). The clock, the limiter and the
    caller's address are looked up only by the credentials that use them. Every credential is
    checked through the autocommit reader (and the limiter's own short transactions), never a
    session the request holds, so the request holds no connection while it waits for a
    password hash or for the limiter's connection; the user it gives is detached."""
    known: Credential | None = request.scope.get(_CREDENTIAL)
    if known is None:
        known = request.scope[_CREDENTIAL] = await _authenticate(request)
    return known


async def _authenticate(request: Request) -> Credential:
    state = request.app.state
    reader: AsyncEngine = state.reader
    settings: Settings = state.settings
    api_key = await api_key_scheme(request)
    if api_key is not None:
        now = await current_time(request)
        user, scope = await api_keys_service.authenticate(reader, api_key, now=now)
        return Credential(user, scope)
    token = await bearer_scheme(request)
    if token:
        return Credential(
            await auth_service.user_from_access_token(reader, token, settings), Scope.write
        )
    basic = await basic_scheme(request)
    if basic is not None:
        sessionmaker: async_sessionmaker[AsyncSession] = state.sessionmaker
        async with sessionmaker() as session:  # an old hash is upgraded here
            user = await auth_service.login(
                session,
                reader,
                await get_login_limiter(request),
                basic.username,
                basic.password,
                client_ip=await client_ip(request),
                now=await current_time(request),
            )
            await commit(session)
        return Credential(user, Scope.write)
    cookie = request.cookies.get(sessions_service.SESSION_COOKIE)
    if cookie:
        # A browser sends the cookie with requests other sites make it send: a change made
        # with it must prove it comes from our own pages. The other credentials are never sent
        # by a browser on its own, so they need no such proof.
        if request.method not in SAFE_METHODS:
            check_csrf(request, cookie, settings)
        now = await current_time(request)
        return Credential(await sessions_service.authenticate(reader, cookie, now=now), Scope.write)
    raise NotAuthenticated()


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def own_origins(request: HTTPConnection, settings: Settings) -> set[str]:
    """The origins trusted to act with the session cookie: the public URL's, the one this
    request was addressed to (the same, unless the service is reached under another name too),
    and the explicit CORS origins, which are already trusted to call the API with credentials
    (`*` never is)."""
    origins = {f"{request.url.scheme}://{request.url.netloc}".lower()}
    for url in (settings.public_url, *settings.cors_origins):
        origin = sessions_service.origin_of(url)
        if origin is not None:
            origins.add(origin)
    return origins


def check_csrf(
    request: HTTPConnection, cookie: str, settings: Settings, *, form_token: str | None = None
) -> None:
    """Refuse (403) a state-changing request made with the session cookie unless it carries
    the session's CSRF token (the X-CSRF-Token header, or a form's csrf_token field) and comes
    from our own origin."""
    presented = request.headers.get(sessions_service.CSRF_HEADER) or form_token
    if not sessions_service.csrf_token_valid(cookie, presented, settings):
        raise CsrfRejected()
    check_origin(request, settings)


def check_origin(request: HTTPConnection, settings: Settings) -> None:
    """Refuse (403) a request whose Origin (or, without one, Referer) is not ours."""
    if not sessions_service.from_own_origin(
        request.headers.get("Origin"),
        request.headers.get("Referer"),
        own_origins(request, settings),
    ):
        raise CsrfRejected()


CurrentCredential = Annotated[Credential, Depends(current_credential)]


async def current_user(request: Request) -> User:
    return (await current_credential(request)).user


CurrentUser = Annotated[User, Depends(current_user)]


async def current_superuser(request: Request) -> User:
    user = (await current_credential(request)).user
    if not user.is_superuser:
        raise PermissionDenied("Superuser required")
    return user


CurrentSuperuser = Annotated[User, Depends(current_superuser)]


class RequireScope:
    """A dependency: the caller's credential must carry `scope` (a read-only API key gets 403
    on a route that requires write)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, request: Request) -> None:
        credential = await current_credential(request)
        if self.scope is Scope.write and credential.scope is not Scope.write:
            raise InsufficientScope()


def needs_credential(call: object) -> bool:
    """Whether a dependency asks for the caller's credential (see `document_security`)."""
    return call in (current_credential, current_user, current_superuser) or isinstance(
        call, RequireScope
    )


CREDENTIAL_SCHEMES = (bearer_scheme, basic_scheme, api_key_scheme)


def require_scope(scope: Scope | str) -> Any:
    """For `dependencies=[require_scope("write")]` on a route or a router."""
    return Depends(RequireScope(Scope(scope)))
