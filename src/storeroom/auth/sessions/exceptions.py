"""Browser sessions: the errors this domain raises."""

from storeroom.auth.exceptions import InvalidToken
from storeroom.core.errors import PermissionDenied


class SessionEnded(InvalidToken):
    detail = "Your session has ended; sign in again"
    code = "session_ended"


class CsrfRejected(PermissionDenied):
    """A request that changes state with the session cookie as its credential must come from
    this site's own pages: with its CSRF token, from its own origin."""

    detail = "Cross-site request refused: missing or wrong CSRF token or origin"
    code = "csrf_rejected"
