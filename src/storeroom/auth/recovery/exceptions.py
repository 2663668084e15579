"""Password recovery: the errors this feature raises. Both are 400s: the link, not the caller,
is at fault."""

from storeroom.core.errors import BadRequest


class InvalidResetToken(BadRequest):
    detail = "The reset link is invalid or has already been used"
    code = "invalid_reset_token"


class ResetTokenExpired(BadRequest):
    detail = "The reset link has expired; ask for a new one"
    code = "reset_token_expired"
