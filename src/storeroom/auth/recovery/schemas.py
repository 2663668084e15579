"""Password recovery: what clients send and get back."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from storeroom.core.schemas import InputSchema
from storeroom.users.schemas import Email, Password


class PasswordRecoveryRequest(InputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "alice@example.com"}]})

    email: Email


class PasswordReset(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"token": "(the token from the reset link)", "new_password": "a-new-long-password"}
            ]
        }
    )

    token: Annotated[str, Field(min_length=1, max_length=4096)]
    new_password: Password


class Acknowledgement(BaseModel):
    detail: str
