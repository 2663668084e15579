"""Auth: token requests and responses, and credential scopes."""

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from storeroom.core.schemas import InputSchema


class Scope(StrEnum):
    """What a credential may do. Passwords and tokens may do anything their user may; an API
    key may be limited to reading."""

    read = "read"
    write = "write"


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str = Field(
        description="Exchange at POST /api/v1/auth/refresh for a new pair; works once."
    )


RefreshTokenValue = Annotated[str, Field(min_length=1, max_length=256)]


class RefreshRequest(InputSchema):
    refresh_token: RefreshTokenValue


class LogoutRequest(InputSchema):
    refresh_token: RefreshTokenValue
