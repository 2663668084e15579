"""Every domain's tables, imported in one place so Alembic and the tests see the whole schema."""

from storeroom.auth.api_keys.models import ApiKey
from storeroom.auth.models import LoginFailure, RateLimitLock, RefreshToken, RequestHit
from storeroom.auth.sessions.models import WebSession
from storeroom.core.db import Base
from storeroom.events.models import Event, EventCounter
from storeroom.files.models import StoredFile
from storeroom.idempotency.models import IdempotencyKey
from storeroom.items.models import Item, ItemCount, ItemTag
from storeroom.jobs.models import Job
from storeroom.users.models import User

__all__ = [
    "ApiKey",
    "Base",
    "Event",
    "EventCounter",
    "IdempotencyKey",
    "Item",
    "ItemCount",
    "ItemTag",
    "Job",
    "LoginFailure",
    "RateLimitLock",
    "RefreshToken",
    "RequestHit",
    "StoredFile",
    "User",
    "WebSession",
]
