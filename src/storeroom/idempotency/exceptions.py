"""Idempotency: the errors this domain raises."""

from storeroom.core.errors import Conflict, DomainError


class IdempotencyKeyReused(DomainError):
    status_code = 422
    code = "idempotency_key_reused"
    detail = "This Idempotency-Key was already used for a different request"


class IdempotencyKeyInProgress(Conflict):
    code = "idempotency_key_in_progress"
    detail = "A request with this Idempotency-Key is still in progress; retry later"


class IdempotentResponseLost(Conflict):
    code = "idempotency_key_unusable"
    detail = (
        "The first response to this Idempotency-Key can no longer be read (the server's secret "
        "key changed); send the request with a new key"
    )
