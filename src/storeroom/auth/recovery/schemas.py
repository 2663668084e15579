"""Password recovery: what clients send and get back."""

from typing import Annotated

from pydantic import BaseModel, Field

from storeroom.core.schemas import InputSchema
from storeroom.users.schemas import Email, Password


class PasswordRecoveryRequest(InputSchema):
    email: Email


class PasswordReset(InputSchema):
    token: Annotated[str, Field(min_length=1, max_length=4096)]
    new_password: Password


class Acknowledgement(BaseModel):
    detail: str
