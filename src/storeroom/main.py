"""The application: routers, middleware, error handlers and lifespan. Wiring only."""

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from storeroom import __version__
from storeroom.auth.api_keys.router import router as api_keys_router
from storeroom.auth.dependencies import CREDENTIAL_SCHEMES, needs_credential
from storeroom.auth.rate_limit import create_login_limiter
from storeroom.auth.recovery.router import router as recovery_router
from storeroom.auth.router import router as auth_router
from storeroom.core.config import Settings, get_settings
from storeroom.core.cors import install_cors
from storeroom.core.db import create_engine, create_reader, create_sessionmaker, utcnow
from storeroom.core.docs import install_docs
from storeroom.core.errors import error_responses, install_error_handlers
from storeroom.core.leader import periodically
from storeroom.core.openapi import (
    document_credential_errors,
    document_schemas,
    document_security,
    operation_id,
)
from storeroom.core.paths import warn_if_shared
from storeroom.core.requests import (
    BodySizeLimitMiddleware,
    HeadRequestMiddleware,
    RequestContextMiddleware,
)
from storeroom.core.security import size_hashing_pool, stop_hashing_pool
from storeroom.core.server import on_shutdown
from storeroom.events.hub import Hub
from storeroom.events.log import create_event_log, session_info
from storeroom.events.router import router as events_router
from storeroom.files import service as files_service
from storeroom.files.router import UPLOAD_FORM
from storeroom.files.router import router as files_router
from storeroom.files.storage import create_storage
from storeroom.health.router import router as health_router
from storeroom.idempotency import service as idempotency_service
from storeroom.items.router import router as items_router
from storeroom.jobs.celery_app import CeleryJobQueue, create_celery
from storeroom.jobs.router import router as jobs_router
from storeroom.jobs.supervisor import embedded_worker
from storeroom.metrics import service as metrics_service
from storeroom.metrics.middleware import MetricsMiddleware
from storeroom.metrics.router import router as metrics_router
from storeroom.notifications.senders import create_sender
from storeroom.users.router import router as users_router
from storeroom.web.rendering import STATIC_DIR
from storeroom.web.router import router as web_router

logger = logging.getLogger("storeroom")

API_PREFIX = "/api/v1"

# How often the database pools' gauges are brought up to date (with metrics on).
POOL_SAMPLE_SECONDS = 1.0

# Python's default is (700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)

DESCRIPTION = """
Storeroom: accounts and authentication, a catalog of user-owned items, file storage,
background jobs, notifications, live events and exports.

Authenticate with **Authorize**, with any of: `Authorization: Bearer <token>` from
`POST /api/v1/auth/token` (email as `username`; renew it at `POST /api/v1/auth/refresh`),
`Authorization: Basic base64(email:password)`, or `X-API-Key: sr_...` from
`POST /api/v1/users/me/api-keys`. The web UI's session cookie works too (state-changing
requests with it need its `X-CSRF-Token` and a same-origin `Origin`). Every error has the body
`{"detail", "code", "errors"?}`.
"""


# The order of the reference documentation (the routers are included busiest first).
OPENAPI_TAGS = [
    {"name": "auth", "description": "Log in, renew and revoke tokens, recover a password."},
    {"name": "users", "description": "Register; the caller's account; superusers' admin."},
    {"name": "api keys", "description": "The caller's personal API keys."},
    {"name": "items", "description": "The caller's catalog: list, search, change, export."},
    {"name": "files", "description": "Files attached to items: upload, download, delete."},
    {"name": "jobs", "description": "Background jobs: imports and their progress."},
    {"name": "events", "description": "Live events as Server-Sent Events."},
    {"name": "health", "description": "Liveness and readiness probes."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    # A server builds its app without arguments (`storeroom serve`, `uvicorn --factory`): that
    # app is the only one of its process, so its shutdown also stops the password-hashing
    # workers, which belong to the process. Tests build hundreds of apps in one process, each
    # with its own settings, and keep the workers from one to the next.
    owns_process = settings is None
    settings = settings or get_settings()
    if owns_process:
        size_hashing_pool(settings.hashing_workers)
    settings.signing_key()  # fail at startup, not at the first login, when the key is missing
    warn_if_shared(settings.data_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.email_sender = create_sender(settings)
        metered = settings.metrics_enabled
        engine = create_engine(
            settings, poolclass=metrics_service.metered_pool("sessions") if metered else None
        )
        app.state.engine = engine
        app.state.reader = reader = create_reader(
            settings, engine, poolclass=metrics_service.metered_pool("reader") if metered else None
        )
        event_log = create_event_log(settings, app.state.reader)
        app.state.sessionmaker = create_sessionmaker(engine, info=session_info(event_log))
        app.state.event_hub = Hub(
            event_log,
            buffer_events=settings.event_buffer_events,
            keepalive_seconds=settings.event_keepalive_seconds,
            send_timeout_seconds=settings.event_send_timeout_seconds,
        )
        app.state.login_limiter = create_login_limiter(settings, app.state.sessionmaker)
        await app.state.file_storage.connect()
        logger.info(
            "storeroom %s started (%s, files in %s)",
            __version__,
            engine.url.get_backend_name(),
            app.state.file_storage,
        )
        if settings.gc_freeze:
            # What startup built lives as long as the process: keep it out of the cyclic
            # collector's passes, which otherwise rescan it and stall requests (measured: p99
            # of an authenticated GET 65 ms -> 9 ms under load). And collect less often: a full
            # pass over what a thousand open event streams hold stalled the loop for ~100 ms
            # (bench sse_fanout, SQLite: delivery p99 195 ms -> 90 ms with these thresholds).
            # Objects are still freed by reference counting at once; only cycles wait longer.
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
        try:
            async with (
                # One process of `serve --workers N` sweeps (core/leader.py).
                files_service.incomplete_upload_sweeper(
                    app.state.file_storage,
                    settings.file_sweep_interval_seconds,
                    lock_path=settings.locks_dir / "file-sweep.lock",
                ),
                idempotency_service.expired_key_sweeper(
                    app.state.sessionmaker,
                    lambda: app.state.clock(),
                    lock_path=settings.locks_dir / "idempotency-sweep.lock",
                ),
                embedded_worker(settings) as app.state.job_worker,
                app.state.event_hub.running() as hub,
                periodically(
                    lambda: metrics_service.sample_pools({"sessions": engine, "reader": reader}),
                    POOL_SAMPLE_SECONDS,
                    what="sampling the database pools",
                    lock_path=None,
                )
                if metered
                else contextlib.nullcontext(),
            ):
                forget = on_shutdown(hub.close_all)
                try:
                    yield
                finally:
                    forget()
        finally:
            try:
                app.state.job_queue.close()
                await app.state.login_limiter.close()
                await app.state.file_storage.close()
                await engine.dispose()
                if reader is not engine:
                    await reader.dispose()
            finally:
                if owns_process:
                    metrics_service.forget_process()
                    await stop_hashing_pool()

    app = FastAPI(
        title="Storeroom",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        generate_unique_id_function=operation_id,
        lifespan=lifespan,
        docs_url=None,  # install_docs serves the pages with local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.file_storage = create_storage(settings)
    app.state.clock = utcnow
    app.state.job_queue = CeleryJobQueue(create_celery(settings))  # connects on first send

    app.include_router(health_router)  # first: probes are hit often and must match fast
    # Domain routers hang directly off the app (no intermediate /api/v1 router): FastAPI walks
    # nested routers on every request, and each level costs. Any request body can be
    # malformed (400) or invalid (422); any request can find the database down or busy (503).
    # The busiest first: a request is matched against the routers in this order
    # (bench/throughput.py).
    for domain_router in (
        items_router,
        users_router,
        auth_router,
        recovery_router,
        api_keys_router,
        files_router,
        jobs_router,
        events_router,
    ):
        app.include_router(
            domain_router, prefix=API_PREFIX, responses=error_responses(400, 422, 503)
        )

    app.include_router(web_router)  # the pages: /, /login, /app, ...
    if settings.metrics_enabled:
        # After the API: each router tried before a request's own costs it a match.
        app.include_router(metrics_router)
    install_docs(app, settings)  # mounts /static/docs, which must come before /static
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_error_handlers(app)
    document_security(app, needs_credential, CREDENTIAL_SCHEMES)
    document_schemas(app, {"UploadForm": UPLOAD_FORM})
    document_credential_errors(app)  # after: it answers for the operations that need a caller
    install_cors(app, settings.cors_origins)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(HeadRequestMiddleware)
    app.add_middleware(RequestContextMiddleware)
    if settings.metrics_enabled:
        app.add_middleware(MetricsMiddleware)  # outermost: it times all of the above
    return app
