"""OpenAPI: what every credential-taking operation can answer, documented in one place."""

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

# Any credential can be refused (401), and HTTP Basic is a password check, so it can be
# throttled (429) like any login.
_CREDENTIAL_ERRORS = (401, 429)


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
