"""The API documentation pages, /docs (Swagger UI) and /redoc, with assets served from here."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from storeroom.core.config import Settings

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/static/docs"


def install_docs(app: FastAPI, settings: Settings) -> None:
    """Serve the documentation pages on an app made with docs_url=None and redoc_url=None.

    FastAPI's own pages load Swagger UI and Redoc from a CDN; these load the copies the
    fastapi-offline package ships, from this service, so they work offline and under a CSP that
    names no other origin (each page still starts its viewer with a small inline script).
    """
    openapi_url = app.openapi_url
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url
    assert openapi_url and oauth2_redirect_url, "the docs need the schema and the redirect page"
    app.mount(ASSETS_URL, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")
    # Otherwise Swagger UI shows a badge fetched from validator.swagger.io, telling it the
    # schema's URL.
    swagger_ui_parameters: dict[str, Any] = {"validatorUrl": None}
    if settings.docs_persist_authorization:
        # Keeps the credentials typed into Authorize in localStorage, across browser restarts
        # and within reach of any script on this origin: only when asked for.
        swagger_ui_parameters["persistAuthorization"] = True

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=root + oauth2_redirect_url,
            swagger_ui_parameters=swagger_ui_parameters,
        )

    async def swagger_ui_oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_route(oauth2_redirect_url, swagger_ui_oauth2_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc, include_in_schema=False)
