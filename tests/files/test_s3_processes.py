"""Files on S3 with real `storeroom serve` processes: a proxied download the store dies under
is cut off where a client can tell, and processes with data directories of their own share
files through one database and one store."""

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SERVICES_MODE, TEST_SECRET_KEY
from tests.s3 import AWS_ENV, BUCKET, REGION, MotoServer
from tests.servers import serve

PASSWORD = "correct horse battery"
MiB = 1024 * 1024
BOUNDARY = "storeroom-s3-processes-4b1e"
LARGE_LIMITS = {
    "STOREROOM_MAX_UPLOAD_BYTES": str(256 * MiB),
    "STOREROOM_USER_QUOTA_BYTES": str(1024 * MiB),
}


@pytest.fixture
def db_backend(migrated_databases: dict[str, str]) -> str:
    """Processes sharing a database need a database server: PostgreSQL."""
    if "postgresql" not in migrated_databases:
        pytest.skip(
            "processes sharing one database need PostgreSQL "
            f"(STOREROOM_TEST_SERVICES={SERVICES_MODE or 'unset'})"
        )
    return "postgresql"


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[MotoServer]:
    """A store of this test's own, so that it may kill it."""
    store = MotoServer.start(tmp_path / "moto.log")
    try:
        store.client().create_bucket(Bucket=BUCKET)
        yield store
    finally:
        store.stop()


def s3_env(store: MotoServer, prefix: str) -> dict[str, str]:
    return {
        **AWS_ENV,
        "STOREROOM_STORAGE_URL": f"s3://{BUCKET}/{prefix}",
        "STOREROOM_S3_ENDPOINT_URL": store.endpoint_url,
        "STOREROOM_S3_REGION": REGION,
    }


def object_sizes(store: MotoServer, prefix: str) -> list[int]:
    listed = store.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
    return [int(entry["Size"]) for entry in listed.get("Contents", [])]


def sqlite_copy(migrated_databases: dict[str, str], workdir: Path) -> str:
    template = Path(migrated_databases["sqlite"].split(":///", 1)[1])
    database = workdir / "storeroom.db"
    shutil.copyfile(template, database)
    return f"sqlite:///{database}"


def account(api: httpx.Client, email: str) -> dict[str, str]:
    registered = api.post("/api/v1/users", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    token = api.post("/api/v1/auth/token", data={"username": email, "password": PASSWORD})
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def multipart(content: bytes, filename: str) -> Iterator[bytes]:
    """The upload's body, sent a MiB at a time as it is produced."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for start in range(0, len(content), MiB):
        yield content[start : start + MiB]
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def upload(api: httpx.Client, headers: dict[str, str], content: bytes) -> str:
    response = api.post(
        "/api/v1/files",
        content=multipart(content, "blob.bin"),
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["size"] == len(content)
    assert response.json()["sha256"] == hashlib.sha256(content).hexdigest()
    file_id: str = response.json()["id"]
    return file_id


def test_a_download_the_store_dies_under_is_cut_off_not_ended_short(
    tmp_path: Path, migrated_databases: dict[str, str], own_store: MotoServer
) -> None:
    content = os.urandom(64 * MiB)
    env = {
        "STOREROOM_DATABASE_URL": sqlite_copy(migrated_databases, tmp_path),
        **s3_env(own_store, "proxied"),
        **LARGE_LIMITS,
    }
    with serve(tmp_path, env) as server, httpx.Client(base_url=server.base_url, timeout=30) as api:
        alice = account(api, "alice@example.com")
        file_id = upload(api, alice, content)

        received = 0
        with (
            pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
            api.stream("GET", f"/api/v1/files/{file_id}/content", headers=alice) as download,
        ):
            assert download.status_code == 200
            assert download.headers["content-length"] == str(len(content))
            chunks = download.iter_raw()
            while received < MiB:
                received += len(next(chunks))
            own_store.kill()
            for chunk in chunks:
                received += len(chunk)
        assert MiB <= received < len(content)
        # An outage, not a bug: one line in the log, no traceback.
        assert "cut off: the object store failed midway" in server.output()
        assert "Traceback" not in server.output()

        # The server lives on: what needs only the database works, and what needs the store
        # says within seconds that the store is away (503), rather than hanging.
        assert api.get("/healthz").status_code == 200
        assert api.get(f"/api/v1/files/{file_id}", headers=alice).status_code == 200
        asked = time.monotonic()
        again = api.get(f"/api/v1/files/{file_id}/content", headers=alice)
        assert time.monotonic() - asked < 10  # refused three times, backing off briefly
        assert again.status_code == 503, again.text
        assert again.json()["code"] == "storage_unavailable"
        assert again.headers["retry-after"] == "5"
        assert server.process.poll() is None


def test_processes_with_their_own_data_directories_share_files_through_the_store(
    tmp_path: Path, database_url: str, s3_server: MotoServer
) -> None:
    content = os.urandom(20 * MiB)  # three parts of a multipart upload
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    shared = {
        "STOREROOM_DATABASE_URL": database_url,
        "STOREROOM_SECRET_KEY": TEST_SECRET_KEY,
        **s3_env(s3_server, prefix),
        **LARGE_LIMITS,
    }
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    with (
        serve(tmp_path / "one", shared) as one,  # its data directory: one/data
        serve(tmp_path / "two", shared) as two,  # and two/data
        httpx.Client(base_url=one.base_url, timeout=30) as api_one,
        httpx.Client(base_url=two.base_url, timeout=30) as api_two,
    ):
        alice = account(api_one, "alice@example.com")
        file_id = upload(api_one, alice, content)
        content_url = f"/api/v1/files/{file_id}/content"

        via_one = api_one.get(content_url, headers=alice)
        via_two = api_two.get(content_url, headers=alice)
        assert via_one.status_code == via_two.status_code == 200
        assert via_two.content == content
        assert via_two.headers["etag"] == via_one.headers["etag"]
        assert via_two.headers["etag"] == f'"{hashlib.sha256(content).hexdigest()}"'
        assert object_sizes(s3_server, prefix) == [len(content)]

        assert api_two.delete(f"/api/v1/files/{file_id}", headers=alice).status_code == 204
        assert api_one.get(f"/api/v1/files/{file_id}", headers=alice).status_code == 404
        assert api_one.get(content_url, headers=alice).status_code == 404
        deadline = time.monotonic() + 10  # the bytes go after the response
        while object_sizes(s3_server, prefix):
            assert time.monotonic() < deadline, "the object outlived its file"
            time.sleep(0.1)
