"""Health: liveness and readiness probes for load balancers and orchestrators."""

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from storeroom.health import service as health_service

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    database: str
    migrations: str
    rate_limits: str = Field(
        description='Where rate limits are counted: "database", "redis", or "database (redis '
        'unreachable)" while the configured Redis does not answer.'
    )
    storage: str = Field(
        default="ok",
        description='"ok", or "unreachable" while the file storage (an S3 bucket, say) does not '
        "answer; file transfers then fail with 503, the rest of the API works.",
    )


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready"}},
    summary="The database is reachable and its schema is at the latest migration",
)
async def readyz(request: Request) -> JSONResponse:
    report = await health_service.readiness(
        request.app.state.engine, request.app.state.login_limiter, request.app.state.file_storage
    )
    body = Readiness(
        status="ready" if report.ready else "unavailable",
        database=report.database,
        migrations=report.migrations,
        rate_limits=report.rate_limits,
        storage=report.storage,
    )
    return JSONResponse(body.model_dump(), status_code=200 if report.ready else 503)
