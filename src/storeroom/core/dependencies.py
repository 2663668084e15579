"""Dependencies every domain may declare."""

from typing import Annotated

from fastapi import Depends, Request

from storeroom.core.config import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(get_app_settings)]
