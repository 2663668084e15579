"""Users: the errors this domain raises."""

from storeroom.core.errors import BadRequest, NotFound, PermissionDenied


class UserNotFound(NotFound):
    detail = "User not found"
    code = "user_not_found"


class EmailTaken(BadRequest):
    detail = "Email already registered"
    code = "email_taken"


class WrongCurrentPassword(BadRequest):
    detail = "current_password is missing or wrong"
    code = "wrong_current_password"


class CannotDemoteSelf(PermissionDenied):
    detail = "Superusers cannot deactivate or demote themselves"
    code = "cannot_demote_self"


class CannotDeleteSelf(PermissionDenied):
    detail = "Superusers cannot delete their own account here; use DELETE /api/v1/users/me"
    code = "cannot_delete_self"
