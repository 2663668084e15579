"""API keys: the errors this part of auth raises."""

from storeroom.core.errors import BadRequest, Conflict, NotFound


class ApiKeyNotFound(NotFound):
    detail = "API key not found"
    code = "api_key_not_found"


class ExpiryInThePast(BadRequest):
    detail = "expires_at must be in the future"
    code = "expiry_in_the_past"


class TooManyApiKeys(Conflict):
    detail = "Too many API keys; revoke one first"
    code = "too_many_api_keys"
