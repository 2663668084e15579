"""Jobs: what clients send to start one, and what they read back."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from storeroom.core.schemas import InputSchema, NulFreeStr, ReadSchema
from storeroom.items.schemas import MAX_TAGS, ExportFormat, Tag
from storeroom.jobs.models import JobStatus, JobType


class ImportOptions(InputSchema):
    strict: bool = Field(
        default=False,
        description="Import nothing and fail the job if any row is invalid (default: skip "
        "invalid rows and report them in the result).",
    )


class ImportItemsJob(InputSchema):
    """Add the rows of one of your uploaded files (CSV with the header
    `name,description,price,tax,tags`, or NDJSON) as items."""

    type: Literal[JobType.import_items]
    file_id: uuid.UUID = Field(description="A file you uploaded (POST /api/v1/files).")
    options: ImportOptions = Field(default_factory=ImportOptions)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "import_items",
                    "file_id": "0b6c8f2e-6a4e-4f4e-9d3c-2f1d8e7a9b10",
                    "options": {"strict": False},
                }
            ]
        }
    )


class ExportItemsJob(InputSchema):
    """Write your (matching) items into a new file of yours; its id is in the job's result."""

    type: Literal[JobType.export_items]
    format: ExportFormat = ExportFormat.csv
    q: Annotated[NulFreeStr | None, Field(min_length=2, max_length=200)] = Field(
        default=None, description="Name or description contains this (case-insensitive)."
    )
    tag: list[Tag] = Field(
        default_factory=list, max_length=MAX_TAGS, description="Items having every one of these."
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "export_items", "format": "csv", "tag": []}]}
    )


JobCreate = Annotated[ImportItemsJob | ExportItemsJob, Field(discriminator="type")]


class JobProgress(BaseModel):
    done: int
    total: int | None = Field(description="Unknown (null) until the job has counted its work.")


class JobRead(ReadSchema):
    id: uuid.UUID
    type: JobType
    status: JobStatus
    progress: JobProgress
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
