"""What only object storage has: multipart uploads (and aborting them), the sweep of stale
multipart uploads, presigned redirects, a store that is down, and moving local files into a
bucket with `storeroom files migrate`. Against a real S3 API (moto in server mode); the rest of
the files suite runs on S3 too (see conftest.py)."""

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from storeroom.cli import app as cli
from storeroom.core.config import Settings, get_settings
from storeroom.main import create_app
from tests.conftest import TEST_SECRET_KEY, login, register
from tests.files.conftest import MULTIPART, multipart_body, upload, uploaded
from tests.s3 import StoreView, storage_env
from tests.servers import free_port

MIB = 1024 * 1024
BIG = 20 * MIB  # three parts of 8 MiB: 8 + 8 + 4


@pytest.fixture
def storage_backend() -> str:
    return "s3"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_upload_bytes": 64 * MIB, "user_quota_bytes": 64 * MIB})


def big_content(size: int = BIG) -> bytes:
    block = hashlib.sha256(b"storeroom").digest() * (MIB // 32)
    return (block * (size // MIB + 1))[:size]


def chunked(body: bytes, chunk: int = MIB) -> Iterator[bytes]:
    """A body sent without Content-Length (chunked), so limits are met mid-stream."""
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]


def assert_store_empty(settings: Settings) -> None:
    view = StoreView(settings)
    assert view.all() == []
    assert view.uploads() == []


def test_a_large_upload_is_a_multipart_upload_of_8_mib_parts(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    content = big_content()
    response = upload(client, alice, content, filename=b"big.bin")
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == hashlib.sha256(content).hexdigest()
    assert response.json()["size"] == BIG
    view = StoreView(settings)
    [stored] = view.all()
    head = view._client.head_object(Bucket=view.bucket, Key=stored.location)
    assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a three-part upload
    assert head["ContentLength"] == BIG
    assert view.uploads() == []

    file_id = response.json()["id"]
    download = client.get(f"/api/v1/files/{file_id}/content", headers=alice)
    assert download.content == content
    # A range across the first part boundary, served from the store's own Range.
    start, end = 8 * MIB - 10, 8 * MIB + 9
    ranged = client.get(
        f"/api/v1/files/{file_id}/content",
        headers={**alice, "Range": f"bytes={start}-{end}"},
    )
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes {start}-{end}/{BIG}"
    assert ranged.content == content[start : end + 1]


def test_going_over_the_quota_mid_upload_aborts_the_multipart_upload(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    app = create_app(settings.model_copy(update={"user_quota_bytes": 12 * MIB}))
    with TestClient(app) as small_quota:
        headers = login(small_quota, "alice@example.com")
        response = small_quota.post(
            "/api/v1/files",
            content=chunked(multipart_body(big_content())),
            headers={**headers, "Content-Type": MULTIPART},
        )
        assert response.status_code == 413
        assert response.json()["code"] == "quota_exceeded"
        assert small_quota.get("/api/v1/files", headers=headers).json()["total"] == 0
    assert_store_empty(settings)


def test_going_over_the_size_limit_mid_upload_aborts_the_multipart_upload(
    settings: Settings,
) -> None:
    app = create_app(settings.model_copy(update={"max_upload_bytes": 12 * MIB}))
    with TestClient(app) as client:
        register(client, "alice@example.com")
        headers = login(client, "alice@example.com")
        response = client.post(
            "/api/v1/files",
            content=chunked(multipart_body(big_content())),
            headers={**headers, "Content-Type": MULTIPART},
        )
        assert response.status_code == 413, response.text
        assert client.get("/api/v1/files", headers=headers).json()["total"] == 0
    assert_store_empty(settings)


def test_an_upload_cut_off_after_a_part_was_sent_leaves_nothing(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    from tests.files.test_orphans import post_upload_raw

    body = multipart_body(big_content())
    cut = 17 * MIB  # two parts sent, a third started
    sent = post_upload_raw(
        client,
        alice,
        [
            {"type": "http.request", "body": body[: 9 * MIB], "more_body": True},
            {"type": "http.request", "body": body[9 * MIB : cut], "more_body": True},
            {"type": "http.disconnect"},
        ],
        len(body),
    )
    assert sent[0]["status"] == 400
    assert client.get("/api/v1/files", headers=alice).json()["total"] == 0
    assert_store_empty(settings)


def test_multipart_uploads_older_than_an_hour_are_aborted_at_startup(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By the store's own `Initiated` stamp. Moto stamps every upload with one fixed date, so
    the clock is set relative to it: first half a minute later, then two hours later."""
    import storeroom.files.s3

    view = StoreView(settings)
    view.start_upload()
    view.start_upload()
    initiated = view.uploads()[0]["Initiated"].timestamp()

    monkeypatch.setattr(storeroom.files.s3.time, "time", lambda: initiated + 30)
    with TestClient(create_app(settings)):
        pass
    assert len(view.uploads()) == 2  # in progress, for all we know

    monkeypatch.setattr(storeroom.files.s3.time, "time", lambda: initiated + 7200)
    with TestClient(create_app(settings)):
        pass
    assert view.uploads() == []


@pytest.fixture
def redirecting(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"storage_downloads": "redirect"}))
    with TestClient(app, follow_redirects=False) as client:
        yield client


def test_redirect_mode_sends_the_owner_to_a_presigned_url_with_safe_headers(
    redirecting: TestClient, settings: Settings
) -> None:
    register(redirecting, "alice@example.com")
    alice = login(redirecting, "alice@example.com")
    page = b"<script>alert(1)</script>"
    file_id = uploaded(redirecting, alice, page, filename=b"page.html", content_type=b"text/html")
    url = f"/api/v1/files/{file_id}/content"

    response = redirecting.get(url, headers=alice)
    assert response.status_code == 307
    assert response.headers["cache-control"] == "private, no-store"
    etag = response.headers["etag"]
    location = response.headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Expires"] == [str(settings.s3_presign_seconds)]
    assert query["response-content-disposition"][0].startswith("attachment;")

    direct = httpx.get(location)  # no Storeroom credentials: the signature is the grant
    assert direct.status_code == 200
    assert direct.content == page
    assert direct.headers["content-type"] == "application/octet-stream"  # never text/html
    assert direct.headers["content-disposition"].startswith("attachment;")
    assert "page.html" in direct.headers["content-disposition"]
    ranged = httpx.get(location, headers={"Range": "bytes=8-13"})
    assert ranged.status_code == 206
    assert ranged.content == page[8:14]

    # Conditional requests and ownership are still Storeroom's.
    assert redirecting.get(url, headers={**alice, "If-None-Match": etag}).status_code == 304
    register(redirecting, "bob@example.com")
    bob = login(redirecting, "bob@example.com")
    assert redirecting.get(url, headers=bob).status_code == 404
    assert redirecting.get(url).status_code == 401


def test_a_store_that_is_down_answers_503_and_records_nothing(settings: Settings) -> None:
    dead = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    with TestClient(create_app(dead)) as client:
        register(client, "alice@example.com")
        alice = login(client, "alice@example.com")
        response = upload(client, alice, b"anything")
        assert response.status_code == 503
        assert response.json()["code"] == "storage_unavailable"
        assert "retry-after" in response.headers
        assert client.get("/api/v1/files", headers=alice).json()["total"] == 0
        # Still ready (the rest of the API works), and the probe says what is missing.
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["storage"] == "unreachable"


def test_readiness_reports_a_reachable_store(client: TestClient) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["storage"] == "ok"


@pytest.fixture
def cli_env(settings: Settings) -> Iterator[dict[str, str]]:
    get_settings.cache_clear()
    yield {
        "STOREROOM_DATABASE_URL": settings.database_url,
        "STOREROOM_DATA_DIR": str(settings.data_dir),
        "STOREROOM_SECRET_KEY": TEST_SECRET_KEY,
    }
    get_settings.cache_clear()


def run_cli(env: dict[str, str], *args: str) -> Any:
    get_settings.cache_clear()
    return CliRunner().invoke(cli, list(args), env=env)


def test_files_migrate_moves_local_files_into_the_bucket_without_downtime(
    settings: Settings, cli_env: dict[str, str]
) -> None:
    """The documented move: migrate while serving; switch to the bucket with the old storage
    as the fallback; migrate again; verify; drop the fallback. Every file readable throughout,
    every copy checked against its sha256."""
    local = settings.model_copy(update={"storage_url": ""})  # <data dir>/files
    moving = settings.model_copy(update={"storage_fallback_url": str(local.storage_location)})
    contents = [b"first file", b"second file", big_content(9 * MIB)]
    with TestClient(create_app(local)) as client:
        register(client, "alice@example.com")
        alice = login(client, "alice@example.com")
        ids = [uploaded(client, alice, content) for content in contents]
        rotting = uploaded(client, alice, b"will rot")
    # One local file rots on disk (same size, other bytes): it must not be copied.
    [rotten] = [blob for blob in StoreView(local).all() if blob.read_bytes() == b"will rot"]
    Path(rotten.location).write_bytes(b"has  rot")
    s3_env = storage_env(settings)
    del s3_env["STOREROOM_STORAGE_URL"]  # the source is the configured (local) storage
    target = settings.storage_url

    first = run_cli({**cli_env, **s3_env}, "files", "migrate", "--to", target)
    assert first.exit_code == 1, first.output
    assert f"copied 3 files ({sum(map(len, contents))} bytes)" in first.output
    assert "1 corrupt" in first.output
    assert f"the bytes fail their sha256: key {rotten.name}" in first.output
    view = StoreView(settings)
    assert rotten.name not in [blob.name for blob in view.all()]
    assert view.uploads() == []
    Path(rotten.location).write_bytes(b"will rot")  # restored from a backup, say

    with TestClient(create_app(local)) as client:  # still serving from local files
        late = uploaded(client, login(client, "alice@example.com"), b"uploaded meanwhile")

    # Switched to the bucket, the old files behind it: nothing is missing meanwhile.
    everything = dict(
        zip([*ids, rotting, late], [*contents, b"will rot", b"uploaded meanwhile"], strict=True)
    )
    with TestClient(create_app(moving)) as client:
        alice = login(client, "alice@example.com")
        for file_id, content in everything.items():
            assert client.get(f"/api/v1/files/{file_id}/content", headers=alice).content == content
        newest = uploaded(client, alice, b"into the bucket")
        assert client.delete(f"/api/v1/files/{ids[0]}", headers=alice).status_code == 204
    del everything[ids[0]]
    everything[newest] = b"into the bucket"
    assert [blob.read_bytes() for blob in StoreView(local).all()].count(b"first file") == 0

    moving_env = {**cli_env, **storage_env(moving)}
    moving_env["STOREROOM_STORAGE_FALLBACK_URL"] = moving.storage_fallback_url
    again = run_cli(moving_env, "files", "migrate", "--to", target)
    assert again.exit_code == 0, again.output
    assert "copied 2 files (26 bytes)" in again.output  # the restored and the late one
    assert "3 were already there" in again.output

    verify = run_cli({**cli_env, **storage_env(settings)}, "files", "verify")
    assert verify.exit_code == 0, verify.output
    assert "5 rows, 5 blobs" in verify.output
    with TestClient(create_app(settings)) as client:  # the fallback dropped
        alice = login(client, "alice@example.com")
        for file_id, content in everything.items():
            assert client.get(f"/api/v1/files/{file_id}/content", headers=alice).content == content


def test_files_migrate_refuses_a_bad_target(cli_env: dict[str, str]) -> None:
    result = run_cli(cli_env, "files", "migrate", "--to", "s3://Not_A_Bucket/x")
    assert result.exit_code == 2
    assert "not a valid bucket name" in result.output
