"""Web: the pages a person uses, HTTP only. Sign-in, registration and password recovery are
plain forms that work without JavaScript; the dashboard is a page whose script calls the JSON
API with the session cookie."""

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from storeroom.auth import service as auth_service
from storeroom.auth.dependencies import LoginLimiterDep, check_csrf, check_origin
from storeroom.auth.exceptions import InvalidCredentials
from storeroom.auth.recovery import service as recovery_service
from storeroom.auth.recovery.schemas import PasswordRecoveryRequest, PasswordReset
from storeroom.auth.sessions import service as sessions_service
from storeroom.core.config import Settings
from storeroom.core.db import DbReader, DbSession
from storeroom.core.dependencies import AppSettings, ClientIp, Now
from storeroom.core.errors import BadRequest, TooManyRequests
from storeroom.notifications.dependencies import AppMailer
from storeroom.users import service as users_service
from storeroom.users.exceptions import EmailTaken, WrongCurrentPassword
from storeroom.users.models import User
from storeroom.users.schemas import UserCreate, UserUpdateMe
from storeroom.web.dependencies import CurrentVisitor, login_url, safe_next
from storeroom.web.rendering import PageRoute, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# The dashboard follows its jobs live over this stream (and polls them while it is closed).
EVENTS_URL = "/api/v1/events"

FormText = Annotated[str, Form(max_length=4096)]

# Messages a redirect may ask the next page to show, by name: no text travels in the URL.
NOTICES = {
    "signed-out": "You are signed out.",
    "password-reset": "Your password was changed. Sign in with the new one.",
    "password-changed": "Your password was changed. Your other sessions were signed out.",
}


def _notice(name: str | None) -> str | None:
    return NOTICES.get(name or "")


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _signed_in(response: Response, token: str, settings: Settings) -> Response:
    response.set_cookie(
        sessions_service.SESSION_COOKIE,
        token,
        max_age=settings.session_days * 24 * 3600,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )
    return response


def _field_errors(exc: ValidationError) -> dict[str, str]:
    """The first message for each field, for the page to show next to it."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        errors.setdefault(field, message)
    return errors


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/app", status_code=307)


@router.get("/login")
async def login_page(
    request: Request,
    visitor: CurrentVisitor,
    next_path: Annotated[str | None, Query(alias="next")] = None,
    notice: str | None = None,
) -> Response:
    if visitor is not None:
        return _see_other(safe_next(next_path))
    return render(request, "login.html", {"next": safe_next(next_path), "notice": _notice(notice)})


@router.post("/login")
async def login(
    request: Request,
    session: DbSession,
    reader: DbReader,
    settings: AppSettings,
    limiter: LoginLimiterDep,
    client: ClientIp,
    now: Now,
    email: FormText = "",
    password: FormText = "",
    next_path: Annotated[str, Form(alias="next", max_length=4096)] = "",
) -> Response:
    check_origin(request, settings)  # no signing in a visitor to an account of another site's
    context = {"next": safe_next(next_path), "email": email}
    try:
        user = await auth_service.login(
            session, reader, limiter, email, password, client_ip=client, now=now
        )
    except InvalidCredentials as exc:
        return render(request, "login.html", {**context, "error": exc.detail}, status_code=401)
    except TooManyRequests as exc:
        return render(
            request,
            "login.html",
            {**context, "error": exc.detail},
            status_code=429,
            headers=exc.headers,
        )
    token = await sessions_service.create(session, user, settings, now=now)
    return _signed_in(_see_other(safe_next(next_path)), token, settings)


@router.post("/logout")
async def logout(
    request: Request,
    session: DbSession,
    settings: AppSettings,
    csrf_token: FormText = "",
) -> Response:
    cookie = request.cookies.get(sessions_service.SESSION_COOKIE)
    if cookie:
        check_csrf(request, cookie, settings, form_token=csrf_token)
        await sessions_service.end(session, cookie)
    response = _see_other("/login?notice=signed-out")
    response.delete_cookie(
        sessions_service.SESSION_COOKIE,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )
    return response


@router.get("/register")
async def register_page(request: Request, visitor: CurrentVisitor) -> Response:
    if visitor is not None:
        return _see_other("/app")
    return render(request, "register.html")


@router.post("/register")
async def register(
    request: Request,
    session: DbSession,
    settings: AppSettings,
    limiter: LoginLimiterDep,
    mailer: AppMailer,
    client: ClientIp,
    now: Now,
    email: FormText = "",
    password: FormText = "",
) -> Response:
    check_origin(request, settings)
    context: dict[str, Any] = {"email": email}
    try:
        data = UserCreate.model_validate({"email": email, "password": password})
    except ValidationError as exc:
        context["errors"] = _field_errors(exc)
        return render(request, "register.html", context, status_code=422)
    try:
        user = await users_service.register(
            session, limiter, data, settings, client_ip=client, now=now
        )
    except EmailTaken as exc:
        context["errors"] = {"email": exc.detail}
        return render(request, "register.html", context, status_code=exc.status_code)
    except TooManyRequests as exc:
        return render(
            request,
            "register.html",
            {**context, "error": exc.detail},
            status_code=429,
            headers=exc.headers,
        )
    mailer.send_welcome(user.email)
    token = await sessions_service.create(session, user, settings, now=now)
    return _signed_in(_see_other("/app"), token, settings)


@router.get("/forgot-password")
async def forgot_password_page(request: Request) -> Response:
    return render(request, "forgot_password.html")


@router.post("/forgot-password")
async def forgot_password(
    request: Request,
    session: DbSession,
    settings: AppSettings,
    limiter: LoginLimiterDep,
    mailer: AppMailer,
    client: ClientIp,
    now: Now,
    email: FormText = "",
) -> Response:
    check_origin(request, settings)
    context: dict[str, Any] = {"email": email}
    try:
        data = PasswordRecoveryRequest.model_validate({"email": email})
    except ValidationError as exc:
        context["errors"] = _field_errors(exc)
        return render(request, "forgot_password.html", context, status_code=422)
    try:
        await recovery_service.request_reset(
            session, limiter, data.email, settings, mailer, client_ip=client, now=now
        )
    except TooManyRequests as exc:
        return render(
            request,
            "forgot_password.html",
            {**context, "error": exc.detail},
            status_code=429,
            headers=exc.headers,
        )
    # The same answer for every address, known or not.
    return render(request, "forgot_password.html", {"sent": True})


@router.get("/reset-password")
async def reset_password_page(
    request: Request,
    session: DbSession,
    settings: AppSettings,
    token: Annotated[str, Query(max_length=4096)] = "",
) -> Response:
    try:
        await recovery_service.check_reset_token(session, token, settings)
    except BadRequest as exc:
        return render(request, "reset_password.html", {"link_error": exc.detail}, status_code=400)
    return render(request, "reset_password.html", {"token": token})


@router.post("/reset-password")
async def reset_password(
    request: Request,
    session: DbSession,
    settings: AppSettings,
    token: FormText = "",
    new_password: FormText = "",
) -> Response:
    check_origin(request, settings)
    try:
        data = PasswordReset.model_validate({"token": token, "new_password": new_password})
    except ValidationError as exc:
        errors = _field_errors(exc)
        if "token" in errors:
            return render(
                request,
                "reset_password.html",
                {"link_error": "The reset link is incomplete; ask for a new one."},
                status_code=400,
            )
        return render(
            request, "reset_password.html", {"token": token, "errors": errors}, status_code=422
        )
    try:
        await recovery_service.reset_password(session, data.token, data.new_password, settings)
    except BadRequest as exc:
        return render(request, "reset_password.html", {"link_error": exc.detail}, status_code=400)
    return _see_other("/login?notice=password-reset")


@router.get("/app")
async def dashboard(
    request: Request, visitor: CurrentVisitor, notice: str | None = None
) -> Response:
    if visitor is None:
        return _see_other(login_url(_path_with_query(request)))
    return render(
        request,
        "dashboard.html",
        {
            "user": visitor.user,
            "csrf_token": visitor.csrf_token,
            "notice": _notice(notice),
            "events_url": EVENTS_URL,
        },
    )


@router.get("/app/password")
async def password_page(request: Request, visitor: CurrentVisitor) -> Response:
    if visitor is None:
        return _see_other(login_url(_path_with_query(request)))
    return render(
        request, "password.html", {"user": visitor.user, "csrf_token": visitor.csrf_token}
    )


@router.post("/app/password")
async def change_password(
    request: Request,
    visitor: CurrentVisitor,
    session: DbSession,
    settings: AppSettings,
    limiter: LoginLimiterDep,
    client: ClientIp,
    now: Now,
    current_password: FormText = "",
    new_password: FormText = "",
    csrf_token: FormText = "",
) -> Response:
    if visitor is None:
        return _see_other(login_url("/app/password"))
    check_csrf(request, visitor.cookie, settings, form_token=csrf_token)
    context: dict[str, Any] = {"user": visitor.user, "csrf_token": visitor.csrf_token}
    try:
        changes = UserUpdateMe.model_validate(
            {"current_password": current_password, "password": new_password}
        )
    except ValidationError as exc:
        # The API calls the new password `password`; the form, `new_password`.
        context["errors"] = {
            ("new_password" if field == "password" else field): message
            for field, message in _field_errors(exc).items()
        }
        return render(request, "password.html", context, status_code=422)
    user: User = visitor.user
    try:
        user = await users_service.update_me(
            session, user, changes, limiter=limiter, client_ip=client, now=now
        )
    except WrongCurrentPassword:
        context["errors"] = {"current_password": "The current password is wrong."}
        return render(request, "password.html", context, status_code=400)
    except TooManyRequests as exc:
        return render(
            request,
            "password.html",
            {**context, "error": exc.detail},
            status_code=429,
            headers=exc.headers,
        )
    # The change ended every session, this one too: the browser that made it gets a new one.
    token = await sessions_service.create(session, user, settings, now=now)
    return _signed_in(_see_other("/app?notice=password-changed"), token, settings)


def _path_with_query(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")
