"""A Python client generated from the live schema by openapi-python-client drives a real
`storeroom serve`: a schema change that breaks generated clients fails here.

The generator lives in a virtualenv of its own (`make install-codegen`, .venv-codegen/): its
releases pin typer below the version Storeroom's CLI uses, so it cannot share .venv.
STOREROOM_TEST_OPENAPI_PYTHON_CLIENT names another `openapi-python-client` executable."""

import csv
import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from io import BytesIO, StringIO
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, SERVICES_MODE, TEST_SECRET_KEY
from tests.servers import ServeProcess, serve

REPO = Path(__file__).resolve().parent.parent
GENERATOR = Path(
    os.environ.get(
        "STOREROOM_TEST_OPENAPI_PYTHON_CLIENT",
        REPO / ".venv-codegen" / "bin" / "openapi-python-client",
    )
)
PACKAGE = "storeroom_client"
# No post hooks: the generated code is imported, not committed, so it needs no formatting
# (and the default hooks would run whatever ruff is on PATH).
GENERATOR_CONFIG = f"package_name_override: {PACKAGE}\npost_hooks: []\n"
EMAIL = "alice@example.com"
ITEMS_CSV = b"name,description,price,tax,tags\nLamp,,12.50,20,home;light\nChair,Oak,40,0,home\n"


def _require_generator() -> None:
    if GENERATOR.exists():
        return
    message = f"{GENERATOR} is missing (make install-codegen)"
    if SERVICES_MODE == "required":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, migrated_databases: dict[str, str]
) -> Iterator[ServeProcess]:
    """A server with its embedded job worker, on a copy of the migrated SQLite database."""
    _require_generator()
    workdir = tmp_path_factory.mktemp("generated-client")
    database = workdir / "storeroom.db"
    shutil.copy(Path(migrated_databases["sqlite"].split(":///", 1)[1]), database)
    env = {
        "STOREROOM_DATABASE_URL": f"sqlite:///{database}",
        "STOREROOM_EMBEDDED_WORKER": "true",
        "STOREROOM_BROKER_URL": "filesystem://",
        "STOREROOM_BROKER_POLLING_INTERVAL_SECONDS": "0.05",
        "STOREROOM_EMAIL_BACKEND": "outbox",
        "STOREROOM_SECRET_KEY": TEST_SECRET_KEY,
    }
    with serve(workdir, env) as process:
        yield process


@pytest.fixture(scope="module")
def generated(server: ServeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Generate the client from the server's /openapi.json and make it importable."""
    workdir = tmp_path_factory.mktemp("codegen")
    schema = httpx.get(f"{server.base_url}/openapi.json", timeout=10)
    assert schema.status_code == 200
    (workdir / "openapi.json").write_bytes(schema.content)
    (workdir / "config.yaml").write_text(GENERATOR_CONFIG)
    output = workdir / "src" / PACKAGE
    result = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(workdir / "openapi.json"),
            "--output-path",
            str(output),
            "--meta",
            "none",
            "--config",
            str(workdir / "config.yaml"),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(output.parent))
    importlib.invalidate_caches()
    try:
        yield output
    finally:
        sys.path.remove(str(output.parent))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture(scope="module")
def alice(server: ServeProcess, generated: Path) -> Any:
    """Alice, registered and logged in through the generated client: its AuthenticatedClient."""
    client_module, models = _module("client"), _module("models")
    register, login = _module("api.users.register"), _module("api.auth.login")
    anonymous = client_module.Client(base_url=server.base_url)
    created = register.sync_detailed(
        client=anonymous, body=models.UserCreate(email=EMAIL, password=PASSWORD)
    )
    assert created.status_code == 201, created.content
    assert created.parsed.email == EMAIL
    tokens = login.sync(client=anonymous, body=models.LoginForm(username=EMAIL, password=PASSWORD))
    assert isinstance(tokens, models.TokenResponse), tokens
    assert tokens.token_type == "bearer"
    return client_module.AuthenticatedClient(base_url=server.base_url, token=tokens.access_token)


def test_refresh_gives_a_new_pair_and_the_old_refresh_token_stops_working(
    server: ServeProcess, generated: Path
) -> None:
    client_module, models = _module("client"), _module("models")
    register, login = _module("api.users.register"), _module("api.auth.login")
    refresh_tokens = _module("api.auth.refresh_tokens")
    read_own_account = _module("api.users.read_own_account")
    anonymous = client_module.Client(base_url=server.base_url)
    email = "bob@example.com"
    register.sync(client=anonymous, body=models.UserCreate(email=email, password=PASSWORD))
    first = login.sync(client=anonymous, body=models.LoginForm(username=email, password=PASSWORD))

    second = refresh_tokens.sync(
        client=anonymous, body=models.RefreshRequest(refresh_token=first.refresh_token)
    )
    assert isinstance(second, models.TokenResponse), second
    assert second.refresh_token != first.refresh_token
    bob = client_module.AuthenticatedClient(base_url=server.base_url, token=second.access_token)
    assert read_own_account.sync(client=bob).email == email
    again = refresh_tokens.sync_detailed(
        client=anonymous, body=models.RefreshRequest(refresh_token=first.refresh_token)
    )
    assert again.status_code == 401
    assert again.parsed.code == "invalid_refresh_token"


def test_items_created_updated_with_if_match_listed_and_exported(alice: Any) -> None:
    models = _module("models")
    create_item, update_item = _module("api.items.create_item"), _module("api.items.update_item")
    list_items, export_items = _module("api.items.list_items"), _module("api.items.export_items")
    created = create_item.sync_detailed(
        client=alice,
        body=models.ItemCreate(name="Espresso machine", price="649.90", tags=["kitchen"]),
    )
    assert created.status_code == 201, created.content
    item = created.parsed
    assert (item.name, item.price, item.tags, item.version) == (
        "Espresso machine",
        "649.90",
        ["kitchen"],
        1,
    )
    etag = created.headers["ETag"]

    updated = update_item.sync_detailed(
        item.id, client=alice, body=models.ItemUpdate(price="599.00"), if_match=etag
    )
    assert updated.status_code == 200, updated.content
    assert (updated.parsed.price, updated.parsed.version) == ("599.00", 2)
    stale = update_item.sync_detailed(
        item.id, client=alice, body=models.ItemUpdate(price="1.00"), if_match=etag
    )
    assert stale.status_code == 412
    assert isinstance(stale.parsed, models.ErrorBody)

    page = list_items.sync(client=alice, tag=["kitchen"])
    assert isinstance(page, models.PageItemRead), page
    assert [(entry.id, entry.price) for entry in page.items] == [(item.id, "599.00")]
    assert page.total == 1

    export = export_items.sync_detailed(
        client=alice, format_=models.ExportFormat.CSV, tag=["kitchen"]
    )
    assert export.status_code == 200
    rows = list(csv.DictReader(StringIO(export.content.decode())))
    assert [(row["id"], row["name"], row["price"]) for row in rows] == [
        (str(item.id), "Espresso machine", "599.00")
    ]


def test_a_file_uploads_and_downloads_byte_for_byte(alice: Any) -> None:
    models, types = _module("models"), _module("types")
    upload_file = _module("api.files.upload_file")
    download_file, list_files = _module("api.files.download_file"), _module("api.files.list_files")
    content = b"\x89PNG not really\x00" * 1000
    uploaded = upload_file.sync_detailed(
        client=alice,
        body=models.UploadForm(
            file=types.File(payload=BytesIO(content), file_name="shelf.png", mime_type="image/png")
        ),
    )
    assert uploaded.status_code == 201, uploaded.content
    file = uploaded.parsed
    assert (file.filename, file.content_type, file.size) == ("shelf.png", "image/png", len(content))

    downloaded = download_file.sync(file.id, client=alice)
    assert isinstance(downloaded, types.File), downloaded
    assert downloaded.payload.read() == content
    assert [entry.id for entry in list_files.sync(client=alice).items] == [file.id]


def test_an_api_key_works_as_a_credential(server: ServeProcess, alice: Any) -> None:
    client_module, models = _module("client"), _module("models")
    create_api_key = _module("api.api_keys.create_api_key")
    read_own_account = _module("api.users.read_own_account")
    created = create_api_key.sync_detailed(
        client=alice, body=models.ApiKeyCreate(name="backup script", scope=models.Scope.READ)
    )
    assert created.status_code == 201, created.content
    key = created.parsed
    assert key.key.startswith(key.prefix)

    by_key = client_module.AuthenticatedClient(
        base_url=server.base_url, token=key.key, prefix="", auth_header_name="X-API-Key"
    )
    me = read_own_account.sync(client=by_key)
    assert isinstance(me, models.UserRead), me
    assert me.email == EMAIL


def test_an_import_job_runs_to_the_end(alice: Any) -> None:
    models, types = _module("models"), _module("types")
    upload_file = _module("api.files.upload_file")
    create_job, read_job = _module("api.jobs.create_job"), _module("api.jobs.read_job")
    list_items = _module("api.items.list_items")
    uploaded = upload_file.sync(
        client=alice,
        body=models.UploadForm(
            file=types.File(payload=BytesIO(ITEMS_CSV), file_name="items.csv", mime_type="text/csv")
        ),
    )
    started = create_job.sync_detailed(
        client=alice, body=models.ImportItemsJob(type_="import_items", file_id=uploaded.id)
    )
    assert started.status_code == 202, started.content
    job = started.parsed
    assert started.headers["Location"] == f"/api/v1/jobs/{job.id}"

    deadline = time.monotonic() + 30
    while job.status not in (models.JobStatus.SUCCEEDED, models.JobStatus.FAILED):
        assert time.monotonic() < deadline, f"the job is still {job.status}"
        time.sleep(0.1)
        job = read_job.sync(job.id, client=alice)
    assert job.status == models.JobStatus.SUCCEEDED, job.error
    assert (job.progress.done, job.progress.total) == (2, 2)
    assert job.result["imported"] == 2
    names = {item.name for item in list_items.sync(client=alice, tag=["home"]).items}
    assert names == {"Lamp", "Chair"}
