"""Metrics: GET /metrics in Prometheus's text format (mounted when STOREROOM_METRICS_ENABLED)."""

from fastapi import APIRouter, Depends, Response

from storeroom.metrics import service as metrics_service
from storeroom.metrics.dependencies import require_metrics_token

router = APIRouter()


@router.get(
    "/metrics",
    include_in_schema=False,  # for Prometheus, not for API clients
    dependencies=[Depends(require_metrics_token)],
)
def metrics() -> Response:
    # A plain def: FastAPI runs it in a worker thread, and reading every process's files is
    # file I/O.
    body, content_type = metrics_service.exposition()
    return Response(body, media_type=content_type)
