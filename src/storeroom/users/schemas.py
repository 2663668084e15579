"""Users: what clients send and what they get back."""

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, EmailStr, Field, StringConstraints

from storeroom.core.schemas import InputSchema, PatchSchema, ReadSchema

MIN_PASSWORD_LENGTH = 8


def normalize_email(address: str) -> str:
    return address.strip().lower()


Email = Annotated[EmailStr, StringConstraints(max_length=254), AfterValidator(normalize_email)]
Password = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=1024,
        description=f"At least {MIN_PASSWORD_LENGTH} characters.",
    ),
]


class UserCreate(InputSchema):
    email: Email
    password: Password

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "alice@example.com", "password": "s3cret-pass"}]}
    )


class UserRead(ReadSchema):
    id: int
    email: str
    is_active: bool
    is_superuser: bool
    created_at: datetime


class UserUpdateMe(PatchSchema):
    """Changing the email or the password needs the current password."""

    email: Email | None = None
    password: Password | None = None
    current_password: Annotated[str, Field(max_length=1024)] | None = None


class UserUpdateAdmin(PatchSchema):
    is_active: bool | None = None
    is_superuser: bool | None = None
