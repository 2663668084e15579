"""Schema bases shared by every domain."""

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


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
