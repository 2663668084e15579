"""Dependencies every domain may declare."""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request, Response

from storeroom.core.config import Settings


async def get_app_settings(request: Request) -> Settings:
    # async so FastAPI does not hop to a worker thread for an attribute read
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(get_app_settings)]


async def current_time(request: Request) -> datetime:
    """Now, from the app's clock (`app.state.clock`), so tests can move time instead of
    sleeping."""
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


Now = Annotated[datetime, Depends(current_time)]

MAX_CLIENT_IP_LENGTH = 45  # the longest textual IPv6 address


async def client_ip(request: Request) -> str:
    """The caller's address (uvicorn resolves X-Forwarded-For from trusted proxies)."""
    host = request.client.host if request.client else "unknown"
    return host[:MAX_CLIENT_IP_LENGTH]


ClientIp = Annotated[str, Depends(client_ip)]


async def no_store(response: Response) -> None:
    """For responses that carry a credential or an account (RFC 6749 section 5.1): no cache,
    shared or private, may keep them."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


NoStore = Depends(no_store)
