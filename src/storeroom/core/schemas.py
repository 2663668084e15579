"""Schema bases and input types shared by every domain."""

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError


def _to_utc(value: datetime) -> datetime:
    # A valid-looking local time can name an instant no datetime holds in UTC
    # (9999-12-31T23:59:59-14:00, 0001-01-01T00:00:00+14:00): refuse it here rather than
    # overflow wherever it is first compared or stored.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_out_of_range", "is outside the years 1-9999 once converted to UTC"
        ) from None


# A datetime with a time zone, converted to UTC; one that cannot be is a 422.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


# PostgreSQL text cannot hold NUL (the driver fails the whole statement, a 500), so no input may
# carry one: refused at validation, on every database alike.
NUL = "\x00"


def _contains_nul(value: object) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, list | tuple | set | frozenset):
        return any(_contains_nul(part) for part in value)
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(part) for key, part in value.items())
    return False


def _nul_character() -> PydanticCustomError:
    return PydanticCustomError("nul_character", "must not contain NUL characters (U+0000)")


def _refuse_nul(value: str) -> str:
    if NUL in value:
        raise _nul_character()
    return value


# For query parameters; every body gets the same rule from InputSchema.
NulFreeStr = Annotated[str, AfterValidator(_refuse_nul)]


class InputSchema(BaseModel):
    """What a client sends: unknown fields are an error, not silently dropped, and no string
    anywhere in it may contain NUL."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @field_validator("*")
    @classmethod
    def _refuse_nul_characters(cls, value: object) -> object:
        # After each field's own validation, so the values are typed and only as deep as the
        # schema allows.
        if _contains_nul(value):
            raise _nul_character()
        return value


def _drop_null_from_schema(schema: dict[str, Any], model: type[Any]) -> None:
    """Advertise what PatchSchema accepts: a field may be left out, but null only where the
    model says so."""
    nullable: frozenset[str] = getattr(model, "nullable_fields", frozenset())
    for name, prop in schema.get("properties", {}).items():
        if name in nullable or "anyOf" not in prop:
            continue
        options = [option for option in prop["anyOf"] if option != {"type": "null"}]
        if len(options) == 1:
            del prop["anyOf"]
            prop.update(options[0])
        else:
            prop["anyOf"] = options
        if prop.get("default", ...) is None:
            del prop["default"]


class PatchSchema(InputSchema):
    """A partial update: every field optional, only the fields sent are applied
    (`model_dump(exclude_unset=True)`), and an explicit null is refused unless the field is
    listed in `nullable_fields`."""

    model_config = ConfigDict(json_schema_extra=_drop_null_from_schema)

    nullable_fields: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_null(cls, value: object, info: ValidationInfo) -> object:
        if value is None and info.field_name not in cls.nullable_fields:
            raise ValueError("may not be null")
        return value

    def changes(self) -> dict[str, object]:
        return self.model_dump(exclude_unset=True)


class ReadSchema(BaseModel):
    model_config = ConfigDict(from_attributes=True)
