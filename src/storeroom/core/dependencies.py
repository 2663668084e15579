"""Dependencies every domain may declare."""

from typing import Annotated

from fastapi import Depends, Request

from storeroom.core.config import Settings


async def get_app_settings(request: Request) -> Settings:
    # async so FastAPI does not hop to a worker thread for an attribute read
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(get_app_settings)]
