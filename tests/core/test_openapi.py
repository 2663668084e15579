"""The OpenAPI schema reads well in generated clients: plain operation ids, named request-body
schemas and an example on every request body."""

import re
from pathlib import Path
from typing import Any

import pytest

from storeroom.core.config import Settings
from storeroom.main import create_app
from tests.conftest import TEST_SECRET_KEY

OPERATION_ID = re.compile(r"^[a-z][a-z0-9_]*$")


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir: Path = tmp_path_factory.mktemp("openapi") / "data"
    settings = Settings(data_dir=data_dir, secret_key=TEST_SECRET_KEY, environment="development")
    return create_app(settings).openapi()


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    ]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    name = node["$ref"].removeprefix("#/components/schemas/")
    resolved: dict[str, Any] = schema["components"]["schemas"][name]
    return resolved


def test_every_operation_id_is_a_unique_plain_name(schema: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in _operations(schema)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for operation_id in ids:
        assert OPERATION_ID.match(operation_id), operation_id
        # FastAPI's default appends the path and method: create_item_api_v1_items_post
        assert "api_v1" not in operation_id, operation_id


def test_operation_ids_name_what_the_endpoints_do(schema: dict[str, Any]) -> None:
    ids = {(method, path): op["operationId"] for method, path, op in _operations(schema)}
    assert ids[("POST", "/api/v1/auth/token")] == "login"
    assert ids[("POST", "/api/v1/items")] == "create_item"
    assert ids[("GET", "/api/v1/files")] == "list_files"
    assert ids[("DELETE", "/api/v1/users/me")] == "delete_own_account"


def test_every_request_body_schema_has_a_name(schema: dict[str, Any]) -> None:
    names = schema["components"]["schemas"]
    assert not [name for name in names if name.startswith("Body_")]
    for method, path, operation in _operations(schema):
        for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
            body = content["schema"]
            assert "$ref" in body or "oneOf" in body, (method, path, media_type)
    login_form = schema["paths"]["/api/v1/auth/token"]["post"]["requestBody"]["content"]
    assert login_form["application/x-www-form-urlencoded"]["schema"] == {
        "$ref": "#/components/schemas/LoginForm"
    }
    upload = schema["paths"]["/api/v1/files"]["post"]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/UploadForm"}
    assert names["UploadForm"]["required"] == ["file"]


def test_every_request_body_has_an_example(schema: dict[str, Any]) -> None:
    bodies = 0
    for method, path, operation in _operations(schema):
        for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
            bodies += 1
            body = _resolve(schema, content["schema"])
            examples = (
                content.get("example") or content.get("examples") or body.get("examples") or []
            )
            assert examples, (method, path, media_type)
    assert bodies >= 10
