"""API keys: what clients send and what they get back (the key itself only once)."""

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from storeroom.auth.schemas import Scope
from storeroom.core.schemas import InputSchema, ReadSchema, UtcDatetime


class ApiKeyCreate(InputSchema):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    expires_at: UtcDatetime | None = Field(
        default=None, description="When the key stops working (with a time zone); never if null."
    )
    scope: Scope = Field(
        default=Scope.write,
        description="`read`: safe methods only (403 on anything that changes state).",
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "backup script", "scope": "read"}]}
    )


class ApiKeyRead(ReadSchema):
    id: int
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it by.")
    scope: Scope
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="Send as the X-API-Key header. Shown only this once.")
