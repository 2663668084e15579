"""Schema bases shared by every domain."""

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class InputSchema(BaseModel):
    """What a client sends: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class PatchSchema(InputSchema):
    """A partial update: every field optional, only the fields sent are applied
    (`model_dump(exclude_unset=True)`), and an explicit null is refused unless the field is
    listed in `nullable_fields`."""

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
