"""OpenAPI: operation ids, hand-written body schemas, and what every credential-taking
operation can answer, each decided in one place."""

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security.base import SecurityBase

# Any credential can be refused (401), and HTTP Basic is a password check, so it can be
# throttled (429) like any login.
_CREDENTIAL_ERRORS = (401, 429)


def operation_id(route: APIRoute) -> str:
    """The endpoint function's name (`create_item`, `login`): what generated clients call the
    operation, so it must be unique across the API and stay stable. FastAPI's default appends
    the path and method (`create_item_api_v1_items_post`)."""
    return route.name


def document_schemas(app: FastAPI, schemas: dict[str, dict[str, Any]]) -> None:
    """Add hand-written component schemas, for request bodies that a handler reads itself and
    that operations refer to by $ref (`#/components/schemas/<name>`)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_credential_errors(app: FastAPI) -> None:
    """Add the 401 and 429 error responses to every operation that declares a security
    scheme, so no router can forget them."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if not isinstance(operation, dict) or not operation.get("security"):
                    continue
                responses = operation.setdefault("responses", {})
                for status in _CREDENTIAL_ERRORS:
                    responses.setdefault(
                        str(status),
                        {
                            "description": HTTPStatus(status).phrase,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ErrorBody"}
                                }
                            },
                        },
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_security(
    app: FastAPI, needs_credential: Callable[[object], bool], schemes: Iterable[SecurityBase]
) -> None:
    """Document `schemes` (any one of them will do) on every operation with a dependency for
    which `needs_credential` is true, as FastAPI would if that dependency declared them; it
    reads them itself instead, which costs less on every request."""
    schemes = tuple(schemes)
    requirement: list[dict[str, list[str]]] = [{scheme.scheme_name: []} for scheme in schemes]
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        secured = False
        for route in iter_route_contexts(app.routes):
            if not isinstance(route.original_route, APIRoute):
                continue
            if not _needs(route.dependant, needs_credential):
                continue
            operations = schema.get("paths", {}).get(route.path_format, {})
            for method in route.methods or ():
                operation = operations.get(method.lower())
                if operation is not None:
                    operation["security"] = requirement
                    secured = True
        if secured:
            components = schema.setdefault("components", {})
            components["securitySchemes"] = {
                scheme.scheme_name: jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
                for scheme in schemes
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _needs(dependant: Dependant, needs_credential: Callable[[object], bool]) -> bool:
    return any(
        needs_credential(dependency.call) or _needs(dependency, needs_credential)
        for dependency in dependant.dependencies
    )
