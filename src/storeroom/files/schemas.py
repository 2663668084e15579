"""Files: what clients get back (uploads arrive as multipart, not as a schema)."""

import uuid
from datetime import datetime

from pydantic import ConfigDict, Field

from storeroom.core.schemas import ReadSchema


class FileRead(ReadSchema):
    id: uuid.UUID
    filename: str = Field(description="The client's name, sanitized; never used as a path.")
    content_type: str = Field(description="The media type the client declared.")
    size: int = Field(description="Bytes.")
    sha256: str = Field(description="Hex SHA-256 of the content; also its ETag.")
    item_id: int | None = Field(description="The item the file is attached to, if any.")
    created_at: datetime

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b6c8f2e-5d4a-4c1e-9f7a-3e2d1c0b9a87",
                    "filename": "shelf.jpg",
                    "content_type": "image/jpeg",
                    "size": 48213,
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "item_id": 42,
                    "created_at": "2026-11-25T14:00:00Z",
                }
            ]
        }
    )
