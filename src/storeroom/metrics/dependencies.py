"""Metrics: who may scrape."""

import secrets

from fastapi import Request

from storeroom.core.dependencies import AppSettings
from storeroom.core.errors import Unauthorized


def require_metrics_token(request: Request, settings: AppSettings) -> None:
    """With STOREROOM_METRICS_TOKEN set, a scrape must send it as a Bearer token."""
    expected = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not expected:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise Unauthorized()
