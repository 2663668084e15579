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


class InputSchema(BaseModel):
    """What a client sends: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


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
