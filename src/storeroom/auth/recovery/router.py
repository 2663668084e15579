"""Password recovery: HTTP endpoints to ask for a reset link and to use it."""

from fastapi import APIRouter, status

from storeroom.auth.dependencies import LoginLimiterDep
from storeroom.auth.recovery import service as recovery_service
from storeroom.auth.recovery.schemas import Acknowledgement, PasswordRecoveryRequest, PasswordReset
from storeroom.core.db import DbSession
from storeroom.core.dependencies import AppSettings, ClientIp, Now
from storeroom.core.errors import error_responses
from storeroom.notifications.dependencies import AppMailer

router = APIRouter(prefix="/auth", tags=["auth"], responses=error_responses(422))

RECOVERY_ACCEPTED = Acknowledgement(
    detail="If an active account uses this address, a password reset link is on its way."
)


@router.post(
    "/password-recovery",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Acknowledgement,
    responses=error_responses(429),
    summary="Email a password reset link",
)
async def request_password_recovery(
    data: PasswordRecoveryRequest,
    session: DbSession,
    settings: AppSettings,
    mailer: AppMailer,
    limiter: LoginLimiterDep,
    client: ClientIp,
    now: Now,
) -> Acknowledgement:
    """Always 202 with the same body, whether or not the address has an account. An active
    account gets an email, sent after the response, with a single-use link that expires. Too
    many requests from the caller's address, or for one address, answer 429 with Retry-After."""
    await recovery_service.request_reset(
        session, limiter, data.email, settings, mailer, client_ip=client, now=now
    )
    return RECOVERY_ACCEPTED


@router.post(
    "/reset-password",
    response_model=Acknowledgement,
    responses=error_responses(400),
    summary="Set a new password with the token from a reset email",
)
async def reset_password(
    data: PasswordReset, session: DbSession, settings: AppSettings
) -> Acknowledgement:
    """A used, expired or altered token is a 400, and the password stays as it was."""
    await recovery_service.reset_password(session, data.token, data.new_password, settings)
    return Acknowledgement(detail="Password changed. Log in with the new one.")
