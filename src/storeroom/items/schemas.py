"""Items: what clients send and what they get back.

Money and percentages are exact decimals and travel as JSON strings ("12.50"), both ways. A
JSON number with a fraction is refused (it has already been through a float); whole numbers
are accepted on input for convenience.
"""

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from storeroom.core.schemas import InputSchema, PatchSchema, ReadSchema
from storeroom.files import schemas as files_schemas

MAX_TAGS = 20
MAX_TAG_LENGTH = 40
MAX_DESCRIPTION_LENGTH = 10_000
_TAG_FORBIDDEN = re.compile(r"[;,\x00-\x1f\x7f]")


def _refuse_float(value: object) -> object:
    if isinstance(value, bool | float):
        raise ValueError('send decimals as a JSON string, e.g. "12.50"')
    return value


def _two_places(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))


def _decimal_schema(description: str, example: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d+(\.\d{1,2})?$",
            "description": description,
            "examples": [example],
        }
    )


# The constraints come before the float check so that pydantic-core applies them natively to
# the decimal (twice as fast as the Python validators it otherwise wraps around it; the import
# job validates every row with these). The check still runs first, on the raw input.
Price = Annotated[
    Decimal,
    Field(ge=0, max_digits=12, decimal_places=2, allow_inf_nan=False),
    BeforeValidator(_refuse_float),
    AfterValidator(_two_places),
    _decimal_schema("Price, an exact decimal string with up to 2 places (>= 0).", "12.50"),
]
TaxPercent = Annotated[
    Decimal,
    Field(ge=0, le=100, max_digits=5, decimal_places=2, allow_inf_nan=False),
    BeforeValidator(_refuse_float),
    AfterValidator(_two_places),
    _decimal_schema("Tax percentage 0-100, an exact decimal string with up to 2 places.", "20"),
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_LENGTH)]


def normalize_tag(value: str) -> str:
    tag = value.strip().lower()
    if not 1 <= len(tag) <= MAX_TAG_LENGTH:
        raise ValueError(f"a tag has 1-{MAX_TAG_LENGTH} characters")
    if _TAG_FORBIDDEN.search(tag):
        raise ValueError("a tag may not contain ';', ',' or control characters")
    return tag


Tag = Annotated[
    str,
    Field(max_length=200),
    AfterValidator(normalize_tag),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TAG_LENGTH,
            "pattern": "^[^;,\\x00-\\x1f\\x7f]+$",
            "description": "Lower-cased and trimmed; no ';', ',' or control characters.",
            "examples": ["kitchen"],
        }
    ),
]


def _split_joined_tags(value: object) -> object:
    """A CSV export row carries its tags `;`-joined; accept that form too."""
    if isinstance(value, str):
        return [part for part in value.split(";") if part.strip()]
    return value


def _distinct(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


Tags = Annotated[
    list[Tag],
    BeforeValidator(_split_joined_tags),
    Field(max_length=MAX_TAGS, description="0-20 tags; lower-cased, duplicates dropped."),
    AfterValidator(_distinct),
]


class ItemSort(StrEnum):
    created_at = "created_at"
    created_at_desc = "-created_at"
    name = "name"
    name_desc = "-name"
    price = "price"
    price_desc = "-price"


class ExportFormat(StrEnum):
    ndjson = "ndjson"
    csv = "csv"


class ItemCreate(InputSchema):
    name: Name
    description: Description | None = None
    price: Price
    tax: TaxPercent = Decimal("0.00")
    tags: Tags = Field(default_factory=list)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Espresso machine",
                    "description": "Dual boiler, 2 L tank",
                    "price": "649.90",
                    "tax": "20",
                    "tags": ["kitchen", "coffee"],
                }
            ]
        }
    )


class ItemUpdate(PatchSchema):
    """Only the fields sent change. `description` may be set to null; the others may not."""

    nullable_fields: ClassVar[frozenset[str]] = frozenset({"description"})

    name: Name | None = None
    description: Description | None = None
    price: Price | None = None
    tax: TaxPercent | None = None
    tags: Tags | None = None


class ItemRead(ReadSchema):
    id: int
    owner_id: int
    name: str
    description: str | None
    price: Annotated[Decimal, _decimal_schema("Price as an exact decimal string.", "649.90")]
    tax: Annotated[Decimal, _decimal_schema("Tax percentage as a decimal string.", "20.00")]
    tags: list[str]
    version: int
    created_at: datetime
    updated_at: datetime


class ItemDetail(ItemRead):
    """One item with the files attached to it: the newest 100, and how many there are."""

    files: list[files_schemas.FileRead] = Field(
        description="The newest attached files, at most 100; "
        "`GET /api/v1/files?item_id=` pages through all of them in the same order."
    )
    files_total: int = Field(description="How many files are attached in all.")


CSV_COLUMNS = ("id", "name", "description", "price", "tax", "tags", "created_at", "updated_at")

# Spreadsheets may run a cell starting with = + - @, a tab or a CR as a formula (CSV injection,
# e.g. =HYPERLINK(...) leaking other cells). OWASP's remedy is a ' in front: the cell becomes
# text. A cell already starting with ' gets one too, so import can strip exactly one and give
# back every value as it was. Only the first character counts: one set lookup per cell.
_CSV_QUOTED_STARTS = frozenset("=+-@\t\r'")


def csv_text_cell(text: str) -> str:
    """A text value (name, description, `;`-joined tags) as an export cell; never a number."""
    return "'" + text if text[:1] in _CSV_QUOTED_STARTS else text


def csv_text_value(cell: str) -> str:
    """The value behind an export cell: csv_text_cell undone. A ' in front of anything else
    protects nothing, so it is part of the value (a hand-written `'abc` stays `'abc`)."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in _CSV_QUOTED_STARTS else cell


def _csv_text(value: Any) -> Any:
    return csv_text_value(value) if isinstance(value, str) else value


def item_create_from_csv_row(row: Mapping[str, Any]) -> ItemCreate:
    """Validate one row of a CSV export as a new item (the import job's entry point): the
    server-assigned columns are ignored, an empty description is no description, and the ' the
    export put in front of text cells is taken off again."""
    return ItemCreate.model_validate(
        {
            "name": _csv_text(row.get("name")),
            "description": _csv_text(row.get("description")) or None,
            "price": row.get("price"),
            "tax": row.get("tax") or "0",
            "tags": _csv_text(row.get("tags")) or [],
        }
    )
