"""Auth: token requests and responses, and credential scopes."""

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from storeroom.core.schemas import InputSchema


class Scope(StrEnum):
    """What a credential may do. Passwords and tokens may do anything their user may; an API
    key may be limited to reading."""

    read = "read"
    write = "write"


class LoginForm(BaseModel):
    """The OAuth2 password form (`application/x-www-form-urlencoded`), field for field as
    FastAPI's OAuth2PasswordRequestForm reads it, under a name generated clients can use.
    Unknown fields are ignored, as OAuth2 clients may send more."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"username": "alice@example.com", "password": "a-long-password"}]
        }
    )

    grant_type: str | None = Field(
        default=None, pattern="^password$", description='"password" if sent at all.'
    )
    username: str = Field(description="The account's email.")
    password: str = Field(json_schema_extra={"format": "password"})
    scope: str = Field(default="", description="Ignored: a login gets its user's rights.")
    client_id: str | None = Field(default=None, description="Ignored.")
    client_secret: str | None = Field(
        default=None, json_schema_extra={"format": "password"}, description="Ignored."
    )


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str = Field(
        description="Exchange at POST /api/v1/auth/refresh for a new pair; works once."
    )


RefreshTokenValue = Annotated[str, Field(min_length=1, max_length=256)]


_REFRESH_TOKEN_EXAMPLE: JsonDict = {"refresh_token": "Zt1b0kq3W9u6iY2n8XcVd4fHs7LmPaQe5RjTgKwBzNo"}


class RefreshRequest(InputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [_REFRESH_TOKEN_EXAMPLE]})

    refresh_token: RefreshTokenValue


class LogoutRequest(InputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [_REFRESH_TOKEN_EXAMPLE]})

    refresh_token: RefreshTokenValue
