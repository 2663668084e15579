"""Auth: the errors this domain raises. Every credential failure is a 401 with the same body,
so a caller learns nothing about which part was wrong."""

from storeroom.core.errors import PermissionDenied, TooManyRequests, Unauthorized


class InvalidCredentials(Unauthorized):
    detail = "Incorrect email or password"
    code = "invalid_credentials"


class InvalidToken(Unauthorized):
    detail = "Could not validate credentials"
    code = "invalid_token"


class TokenExpired(Unauthorized):
    detail = "Token expired"
    code = "token_expired"


class NotAuthenticated(Unauthorized):
    detail = "Not authenticated"
    code = "not_authenticated"


class InvalidRefreshToken(Unauthorized):
    detail = "Invalid refresh token"
    code = "invalid_refresh_token"


class LoginThrottled(TooManyRequests):
    detail = "Too many failed logins; try again later"
    code = "login_throttled"


class RequestsThrottled(TooManyRequests):
    detail = "Too many requests; try again later"
    code = "too_many_requests"


class InsufficientScope(PermissionDenied):
    detail = "This API key is read-only"
    code = "insufficient_scope"
